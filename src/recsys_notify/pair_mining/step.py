"""The pair_mining step: events of the window -> pair_interactions, pair_items, pairs (one commit).

Resolves the event window and the items as of the run date once, registers them on the SQL engine
(DuckDB or Spark), runs :mod:`recsys_notify.pair_mining.mining`, writes the outputs together and
logs the run to MLflow. Everything is computed before anything is written, so bad input leaves no
partial output.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

from recsys_notify.core import tracking
from recsys_notify.core.config import PairMiningSettings, Settings
from recsys_notify.core.datasets import EVENTS, ITEMS, PAIR_INTERACTIONS, PAIR_ITEMS, PAIR_ITEMS_QUARANTINE, PAIRS
from recsys_notify.core.embeddings import VECTORS, item_vectors, l2_normalize
from recsys_notify.core.inputs import Inputs, as_of, resolve, window
from recsys_notify.core.sql_engine import SqlEngine, open_engine
from recsys_notify.core.step import StepResult, parse_params
from recsys_notify.core.storage import Storage
from recsys_notify.pair_mining.mining import (
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    MiningResult,
    attach_similarity,
    count_pairs,
    type_masks,
)

NAME = "pair_mining"


def resolve_inputs(storage: Storage, dt: date, cfg: PairMiningSettings) -> Inputs:
    return resolve(storage, {"events": window(EVENTS, dt, cfg.window_days), VECTORS: as_of(ITEMS, dt)})


def compute(storage: Storage, inputs: Inputs, cfg: PairMiningSettings, engine: SqlEngine) -> MiningResult:
    """Register the resolved inputs on ``engine`` and mine (nothing is written)."""
    events = inputs["events"]
    rows = engine.register_partitions("events", storage, events.partitions, EVENT_COLUMNS)
    engine.register_table("items", pa.Table.from_pandas(inputs.dimension(VECTORS, ITEM_COLUMNS, dt_column="items_dt"),
                                                        preserve_index=False))
    counted = count_pairs(engine, cfg, f"{events.dates[0]}..{events.dates[-1]}")
    counted.stats["window_events"] = rows
    _, vectors = item_vectors(inputs, "content", dim=None, item_ids=counted.items.column("item_id").to_numpy())
    return attach_similarity(counted, l2_normalize(vectors), cfg)


def compute_pairs(storage: Storage, dt: date, cfg: PairMiningSettings, engine: SqlEngine) -> MiningResult:
    """Resolve and mine the pairs of ``dt`` on ``engine`` without writing (tests, benchmarks, engine parity)."""
    return compute(storage, resolve_inputs(storage, dt, cfg), cfg, engine)


def run(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> StepResult:
    """Mine the pairs of ``dt``; write the three outputs and the quarantine as one commit; track the run."""
    import mlflow

    settings, _ = parse_params(settings, NAME, params)
    cfg = settings.pair_mining
    inputs = resolve_inputs(storage, dt, cfg)  # a missing input fails here, before a run is opened
    window = [inputs["events"].dates[0].isoformat(), dt.isoformat()]
    run_params = cfg.model_dump(exclude={"spark_conf"}) | {"dt": dt.isoformat(), "window_start": window[0]}
    with tracking.tracked_run(NAME, f"{NAME} {dt}", params=run_params, tags={"dt": dt.isoformat(), "step": NAME},
                              settings=settings) as active:
        engine = open_engine(cfg.engine, spark_master=cfg.spark_master, spark_remote=cfg.spark_remote,
                             spark_conf=cfg.spark_conf, duckdb_memory_limit=cfg.duckdb_memory_limit,
                             duckdb_threads=cfg.duckdb_threads)
        with engine:
            result = compute(storage, inputs, cfg, engine)
        meta = {"window": window, "engine": cfg.engine}
        written = storage.write_many(dt, {
            PAIR_INTERACTIONS.name: result.interactions, PAIR_ITEMS.name: result.items,
            PAIR_ITEMS_QUARANTINE.name: result.quarantine, PAIRS.name: result.pairs,
        }, meta, {PAIRS.name: {"similarity_edges": cfg.similarity_edges}})
        tracking.log_lineage(inputs)
        mlflow.log_metrics({k: float(v) for k, v in result.stats.items()})
        mlflow.log_dict(result.stats, "stats.json")
        if result.quarantine.num_rows:
            mlflow.log_table(result.quarantine.to_pandas(), "unknown_items.json")
        _num_clients_hist(result.pairs)
    summary = {"engine": cfg.engine, "window": window,
               **{k: result.stats[k] for k in ("interactions", "items", "unknown_items", "clients_capped",
                                               "pairs", "pairs_positive", "pairs_negative")}}
    return StepResult(NAME, dt, {k: w.rows for k, w in written.items()}, summary, inputs.summary(),
                      **tracking.run_ids(active))


def _num_clients_hist(pairs: pa.Table) -> None:
    """A log-log histogram of num_clients per pair type (``num_clients_hist.png``)."""
    with tracking.logged_figure("num_clients_hist.png") as (_, ax):
        num = pairs.column("num_clients").to_numpy()
        top = int(num.max()) if len(num) else 1
        bins = np.unique(np.round(np.logspace(0, np.log10(top + 1), 40))).astype(int)
        for t, is_type in type_masks(pairs).items():
            if is_type.any():
                ax.hist(num[is_type], bins=bins, alpha=0.6, label=f"{t} ({int(is_type.sum()):,})")
        ax.set(xscale="log", yscale="log", xlabel="num_clients", ylabel="pairs", title="Pairs by number of clients")
        if len(num):
            ax.legend()
