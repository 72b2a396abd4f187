"""The user_medoids step, sharded by a stable hash of the user id.

A shard reads only its users' buckets of each events partition (:mod:`recsys_notify.core.buckets`).
With ``engine: spark`` there is one part: a Spark job over all user buckets
(:mod:`recsys_notify.user_medoids.spark`), through the same pure compute.
:func:`run_part` computes one shard (:mod:`recsys_notify.user_medoids.medoids`) and commits that
shard's partial dataset, so shards run on different Celery workers; :func:`finish` commits the
``user_medoids`` partition once from every shard and logs the MLflow run; :func:`run` does all of it
in one process (the CLI).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_notify.core import tracking
from recsys_notify.core.buckets import by_user_sorted, merge_bucketed, user_slot
from recsys_notify.core.clustering import GatheredRows, Vectors
from recsys_notify.core.config import Settings
from recsys_notify.core.datasets import EVENTS, TRUTH_ITEMS, TRUTH_USERS, USER_MEDOIDS, arrow_schema, user_medoid_shard
from recsys_notify.core.embeddings import VECTORS, item_vectors, l2_normalize, vectors_request
from recsys_notify.core.inputs import Inputs, as_of, day, resolve, window
from recsys_notify.core.interaction_weights import EVENT_COLUMNS, weigh_interactions
from recsys_notify.core.step import StepResult, parse_params
from recsys_notify.core.storage import Storage
from recsys_notify.user_medoids import evaluation
from recsys_notify.user_medoids.medoids import SIZE_BINS, MedoidStats, compute_medoids

NAME = "user_medoids"
EVAL_USERS = 20_000  # users in the synthetic-truth coverage check
ORDER = ["user_id", "rank"]  # row order inside each user bucket of the partition


def _settings(settings: Settings, params: dict[str, Any] | None) -> Settings:
    return parse_params(settings, NAME, params)[0]


# how the work is split and run: the output does not depend on them
EXECUTION = {"shards", "engine", "spark_master", "spark_remote", "spark_conf"}


def run_params(settings: Settings) -> dict[str, Any]:
    """What a shard's output depends on (every shard of one date must agree)."""
    return {**settings.user_medoids.model_dump(exclude=EXECUTION), "embedding_source": settings.embedding.source,
            "trimmed_dim": settings.embedding.trimmed_dim,
            "interaction_weights": settings.interaction_weights.model_dump()}


def shard_count(settings: Settings) -> int:
    """Shards of a run: ``shards``, or one when Spark computes every user bucket in one job."""
    return 1 if settings.user_medoids.engine == "spark" else settings.user_medoids.shards


def parts(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> list[int]:
    return list(range(shard_count(_settings(settings, params))))


def resolve_inputs(storage: Storage, settings: Settings, dt: date) -> Inputs:
    return resolve(storage, {"events": window(EVENTS, dt, settings.user_medoids.window_days),
                             VECTORS: vectors_request(settings.embedding.source, dt)})


def shard_inputs(interactions: pd.DataFrame, inputs: Inputs, settings: Settings) -> Vectors:
    """Unit item vectors aligned with ``interactions``' rows (gathered from one row per distinct item)."""
    if len(interactions) == 0:
        return np.zeros((0, settings.embedding.trimmed_dim), dtype=np.float32)
    codes, items = pd.factorize(interactions["item_id"].to_numpy(np.int64))  # hashing, no sort
    _, matrix = item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim, item_ids=items)
    return GatheredRows(l2_normalize(matrix), codes)  # matrix rows in the order of ``items``


def compute_shard(storage: Storage, settings: Settings, dt: date, shard: int, shards: int
                  ) -> tuple[pd.DataFrame, MedoidStats, Inputs]:
    """One shard's medoids (nothing written); reads only the shard's user buckets of each day."""
    inputs = resolve_inputs(storage, settings, dt)
    # the events die with the weighing: their memory is reused by the clustering instead of adding to its peak
    interactions = weigh_interactions(inputs.frame("events", EVENT_COLUMNS, shard=(shard, shards)),
                                      settings.interaction_weights)
    X = shard_inputs(interactions, inputs, settings)
    medoids, stats = compute_medoids(interactions, X, dt, settings.user_medoids)
    return medoids, stats, inputs


def run_part(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None, shard: int
             ) -> dict[str, Any]:
    """Compute one shard's medoids (embedded, or all users on Spark) and commit the shard's dataset for ``dt``."""
    settings = _settings(settings, params)
    shards = shard_count(settings)
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range 0..{shards - 1}")
    if settings.user_medoids.engine == "spark":
        from recsys_notify.user_medoids.spark import compute_spark

        medoids, stats, inputs = compute_spark(storage, settings, dt)
    else:
        medoids, stats, inputs = compute_shard(storage, settings, dt, shard, shards)
    table = pa.Table.from_pandas(medoids, preserve_index=False).select(USER_MEDOIDS.columns)
    table, layout = by_user_sorted(table.cast(arrow_schema(USER_MEDOIDS)), ORDER, settings.event_buckets)
    meta = {"stats": stats.__dict__, "params": run_params(settings), "shard": shard, "shards": shards,
            "engine": settings.user_medoids.engine, "inputs": inputs.lineage(), **layout}
    storage.write(user_medoid_shard(shard, shards).name, dt, table, metadata=meta)
    return {"shard": shard, "shards": shards, "users": stats.users, "medoids": stats.medoids}


def finish(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None,
           part_results: list[dict[str, Any]] | None = None) -> StepResult:
    """Commit ``user_medoids`` for ``dt`` from all shard outputs (one atomic write) and log the MLflow run."""
    import mlflow

    settings = _settings(settings, params)
    shards = shard_count(settings)
    inputs = resolve(storage, {
        **{f"shard_{s}": day(user_medoid_shard(s, shards), dt) for s in range(shards)},
        "events": window(EVENTS, dt, settings.user_medoids.window_days),
        "truth_users": as_of(TRUTH_USERS, dt, required=False), "truth_items": as_of(TRUTH_ITEMS, dt, required=False),
    })
    expected = run_params(settings)
    stats = MedoidStats()
    for s in range(shards):
        meta = inputs[f"shard_{s}"].partitions[0].metadata
        if meta.get("params") != expected:
            raise ValueError(f"shard {s} of {dt} was computed with other parameters than this run; rerun all shards")
        stats = stats.add(MedoidStats(**meta["stats"]))
    medoids = merge_bucketed([(inputs.table(f"shard_{s}"), inputs[f"shard_{s}"].partitions[0].metadata)
                              for s in range(shards)], ORDER, settings.event_buckets)
    with tracking.tracked_run(NAME, f"{NAME} {dt}", params={**expected, "shards": shards, "date": dt},
                              tags={"dt": dt.isoformat(), "step": NAME}, settings=settings) as active:
        with ThreadPoolExecutor(1) as pool:  # the write encodes in Arrow, off the GIL, while the check runs here
            writing = pool.submit(storage.write, USER_MEDOIDS.name, dt, medoids,  # notification shards read buckets
                                  metadata={"stats": stats.__dict__, "params": expected, "shards": shards,
                                            "buckets": settings.event_buckets})
            tracking.log_lineage(inputs)
            metrics = _metrics(medoids, stats)
            if inputs["truth_users"].partitions:
                metrics.update({f"eval_{k}": v for k, v in _evaluate(inputs, medoids, settings).items()})
            written = writing.result()
        mlflow.log_metrics(metrics)
        _size_plot(stats)
    summary = {**{k: v for k, v in stats.__dict__.items() if k != "size_hist"},
               **{k: v for k, v in metrics.items() if k.startswith("eval_")}}
    return StepResult(NAME, dt, {USER_MEDOIDS.name: written.rows}, summary, inputs.summary(),
                      **tracking.run_ids(active))


def run(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> StepResult:
    """Every shard then the combined partition, in this process (the DAG maps shards over workers)."""
    results = [run_part(storage, settings, dt, params, shard) for shard in parts(storage, settings, dt, params)]
    return finish(storage, settings, dt, params, results)


def _metrics(medoids: pa.Table, stats: MedoidStats) -> dict[str, float]:
    users = len(pc.unique(medoids.column("user_id")))
    metrics = {k: float(v) for k, v in stats.__dict__.items() if k != "size_hist"}
    metrics.update({
        "medoids_per_user_mean": medoids.num_rows / users if users else 0.0,
        "clusters_per_user_mean": stats.clusters / max(stats.users - stats.users_skipped, 1),
        "noise_fraction": stats.noise_points / max(stats.interactions, 1),
    })
    for lo, hi, count in zip(SIZE_BINS[:-1], SIZE_BINS[1:], stats.size_hist):
        metrics[f"clusters_size_{lo}_{hi - 1 if hi < 10**9 else 'plus'}"] = float(count)
    return metrics


def eval_slice(users: int, buckets: int) -> int:
    """``n`` such that the users of shard 0 of ``n`` are about ``EVAL_USERS``: the largest divisor of ``buckets``
    leaving at least that many (1 for a small world), so the check reads whole buckets and the same users
    whatever the shard count."""
    return max((n for n in range(1, buckets + 1) if buckets % n == 0 and users // n >= EVAL_USERS), default=1)


def _evaluate(inputs: Inputs, medoids: pa.Table, settings: Settings) -> dict[str, float]:
    """Synthetic-truth topic coverage of up to ``EVAL_USERS`` users with medoids (the users of a few buckets)."""
    users = pc.unique(medoids.column("user_id")).to_numpy()
    n = eval_slice(len(users), settings.event_buckets)
    users = np.sort(users[user_slot(users, n) == 0])[:EVAL_USERS]
    wanted = pa.array(users, pa.int64())
    events = inputs.table("events", EVENT_COLUMNS, shard=(0, n))
    events = events.filter(pc.is_in(events["user_id"], wanted)).to_pandas()  # before pandas
    interactions = weigh_interactions(events, settings.interaction_weights)
    selected = medoids.filter(pc.is_in(medoids["user_id"], wanted)).to_pandas()
    return evaluation.evaluate(selected, interactions, inputs.dimension("truth_users", shard=(0, n)),
                               inputs.dimension("truth_items"), settings.user_medoids.max_medoids)


def _size_plot(stats: MedoidStats) -> None:
    labels = [f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in zip(SIZE_BINS[:-2], SIZE_BINS[1:-1])]
    labels.append(f"{SIZE_BINS[-2]}+")
    with tracking.logged_figure("cluster_sizes.png", figsize=(7, 3.5)) as (_, ax):
        ax.bar(labels, stats.size_hist)
        ax.set_xlabel("user cluster size (items)")
        ax.set_ylabel("clusters")
        ax.set_title("Per-user cluster sizes")
