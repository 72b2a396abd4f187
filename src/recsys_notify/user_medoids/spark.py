"""User medoids as one Spark job: the window's events grouped by user bucket, each group through the same compute.

``applyInPandas`` hands each bucket group (every event of its users) to :func:`weigh_interactions`
and :func:`compute_medoids`, what an embedded shard runs; a user's medoids depend only on that
user's rows, so the output equals the embedded one (``tests/test_user_medoids_spark.py``). The
trimmed unit item vectors travel to the workers with the function. Each group returns its medoid
rows plus one row carrying its counts (``stats`` JSON), which the driver sums. Partitions written
before bucketing are grouped by Spark's own hash of the user id instead (any grouping of whole
users gives the same result).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.core.buckets import BUCKET, DEFAULT_BUCKETS
from recsys_notify.core.clustering import GatheredRows
from recsys_notify.core.config import InteractionWeights, Settings, UserMedoidSettings
from recsys_notify.core.datasets import USER_MEDOIDS, ContractError
from recsys_notify.core.embeddings import item_vectors, l2_normalize
from recsys_notify.core.inputs import Inputs
from recsys_notify.core.interaction_weights import EVENT_COLUMNS, weigh_interactions
from recsys_notify.core.sql_engine import open_engine
from recsys_notify.core.storage import Storage
from recsys_notify.user_medoids.medoids import MedoidStats, compute_medoids

STATS = "stats"
_SPARK_TYPES = {"int64": "long", "float64": "double"}
OUTPUT_SCHEMA = ", ".join(f"{c} {_SPARK_TYPES[t]}" for c, t in USER_MEDOIDS.schema.items()) + f", {STATS} string"


def group_medoids(ids: np.ndarray, unit: np.ndarray, dt: date, cfg: UserMedoidSettings,
                  weights: InteractionWeights) -> Any:
    """The function applied to each group: its events in, its medoid rows and one counts row out."""

    def apply(events: pd.DataFrame) -> pd.DataFrame:
        interactions = weigh_interactions(events, weights)
        items = interactions["item_id"].to_numpy()
        pos = np.searchsorted(ids, items).clip(max=max(len(ids) - 1, 0))
        if len(items) and not (ids[pos] == items).all():
            missing = items[ids[pos] != items]
            raise ContractError(f"{len(np.unique(missing))} item id(s) have no embedding on {dt}, e.g. {missing[0]}")
        medoids, stats = compute_medoids(interactions, GatheredRows(unit, pos), dt, cfg)
        counts = pd.DataFrame({c: [0] for c in USER_MEDOIDS.columns}).astype(medoids.dtypes.to_dict())
        return pd.concat([medoids.assign(**{STATS: None}), counts.assign(**{STATS: json.dumps(stats.__dict__)})],
                         ignore_index=True)

    return apply


def compute_spark(storage: Storage, settings: Settings, dt: date) -> tuple[pd.DataFrame, MedoidStats, Inputs]:
    """Medoids of every user of ``dt`` computed on Spark (nothing written)."""
    from pyspark.sql import functions as F

    from recsys_notify.user_medoids.step import resolve_inputs  # the step imports this module lazily

    cfg = settings.user_medoids
    inputs = resolve_inputs(storage, settings, dt)
    partitions = inputs["events"].partitions
    ids, matrix = item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim)
    order = np.argsort(ids, kind="stable")  # dimension order; the groups look ids up by binary search
    apply = group_medoids(ids[order], l2_normalize(matrix[order]), dt, cfg, settings.interaction_weights)
    bucketed = all(BUCKET in p.columns for p in partitions)
    if cfg.spark_master.startswith("local") and not cfg.spark_remote:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers run this interpreter
    with open_engine("spark", spark_master=cfg.spark_master, spark_remote=cfg.spark_remote,
                     spark_conf=cfg.spark_conf) as engine:
        engine.register_partitions("events", storage, partitions, EVENT_COLUMNS + ([BUCKET] if bucketed else []))
        events = engine.spark.table("events")
        group = F.col(BUCKET) if bucketed else F.pmod(F.xxhash64("user_id"), F.lit(DEFAULT_BUCKETS))
        out = (events.withColumn("_group", group).groupBy("_group")
               .applyInPandas(lambda frame: apply(frame.drop(columns="_group")), schema=OUTPUT_SCHEMA)
               .toPandas())
    counts = out[STATS].notna()
    stats = MedoidStats()
    for text in out.loc[counts, STATS]:
        stats = stats.add(MedoidStats(**json.loads(text)))
    medoids = out.loc[~counts, USER_MEDOIDS.columns].astype({c: t for c, t in USER_MEDOIDS.schema.items()})
    return medoids.sort_values(["user_id", "rank"]).reset_index(drop=True), stats, inputs
