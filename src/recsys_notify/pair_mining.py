"""Pair mining: item pairs that clients treat alike, the training data of the generic embedding model.

Phases (SQL in ``sql/pair_mining.sql``, run by DuckDB or Spark through :mod:`sql_engine`):

1. ``pair_interactions``: the window's events per (client, item), labelled positive / negative /
   neutral; neutral rows and clients whose positive share is above the limit are dropped.
2. ``pair_items``: the items of phase 1 with their metadata; items unknown to ``items`` go to
   ``pair_items_quarantine`` and are counted (and fail the run above ``max_unknown_item_share``).
3. ``pairs``: positive pairs (two positives of one client, heavy clients capped to a deterministic
   sample) and negative pairs (two negatives in one session), counted in distinct clients, kept
   from ``min_clients`` up, with the content cosine similarity and its bucket.

Everything is computed before anything is written, so bad input leaves no partial output.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_notify.config import PairMiningSettings, Settings
from recsys_notify.contract import PRODUCERS, ContractError
from recsys_notify.embeddings import item_vectors, l2_normalize
from recsys_notify.sql_engine import SqlEngine, load_queries, open_engine
from recsys_notify.storage import MissingPartitionError, Storage, as_date

EXPERIMENT = "pair_mining"
EVENT_COLUMNS = ["user_id", "item_id", "session_id", "watch_time_s", "duration_s", "liked"]
ITEM_COLUMNS = ["item_id", "creator_id", "language", "duration_s"]
_SIM_CHUNK = 16_384

INTERACTIONS_SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("item_id", pa.int64()), ("label", pa.string()), ("events", pa.int64()),
    ("watch_time_s", pa.float64()), ("completion", pa.float64()), ("liked", pa.bool_()),
])
ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.int64()), ("creator_id", pa.int64()), ("language", pa.string()), ("duration_s", pa.float64()),
    ("items_dt", pa.date32()), ("interactions", pa.int64()), ("clients", pa.int64()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("item_id", pa.int64()), ("interactions", pa.int64()), ("clients", pa.int64()), ("reason", pa.string()),
])
PAIR_COUNTS_SCHEMA = pa.schema([
    ("item1", pa.int64()), ("item2", pa.int64()), ("pair_type", pa.string()), ("num_clients", pa.int64()),
])
PAIRS_SCHEMA = PAIR_COUNTS_SCHEMA.append(pa.field("content_sim", pa.float64())).append(
    pa.field("sim_bucket", pa.int64()))


@dataclass
class MiningResult:
    """The three outputs (plus quarantine) of one mining run and its row counts."""

    interactions: pa.Table
    items: pa.Table
    quarantine: pa.Table
    pairs: pa.Table
    stats: dict[str, int]


def window_days(dt: date | str, days: int) -> list[date]:
    """The ``days`` days ending at ``dt`` (inclusive), oldest first."""
    end = as_date(dt)
    return [end - timedelta(days=i) for i in range(days - 1, -1, -1)]


def _check_window(storage: Storage, days: list[date]) -> None:
    present = set(storage.dates("events"))
    missing = [d for d in days if d not in present]
    if missing:
        listed = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MissingPartitionError(
            f"pair mining needs events for {days[0]}..{days[-1]}; missing {len(missing)} day(s): {listed}. "
            f"Run {PRODUCERS['events']} for those dates first (or shorten pair_mining.window_days)"
        )


def _items_table(storage: Storage, dt: date) -> pa.Table:
    """Item metadata known on ``dt`` with ``items_dt``, the ``items`` partition holding the row."""
    days = [d for d in storage.dates("items") if d <= dt]
    if not days:
        raise MissingPartitionError(f"items has no partition on or before {dt}: run {PRODUCERS['items']} first")
    tables = []
    for day in days:
        table = storage.read_table("items", day, ITEM_COLUMNS)
        tables.append(table.append_column("items_dt", pa.array([day] * table.num_rows, pa.date32())))
    return pa.concat_tables(tables, promote_options="default")


def _one_row(table: pa.Table) -> dict[str, int]:
    return {k: int(v[0] or 0) for k, v in table.to_pydict().items()}


def similarity_buckets(sim: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bucket ``i`` holds ``edges[i] <= sim < edges[i+1]``; values beyond the outer edges join the end buckets."""
    return np.clip(np.searchsorted(np.asarray(edges), sim, side="right") - 1, 0, len(edges) - 2).astype(np.int64)


def content_similarity(vectors: np.ndarray, pos1: np.ndarray, pos2: np.ndarray) -> np.ndarray:
    """Inner products of row pairs of ``vectors`` (L2-normalised: cosine), clipped to [-1, 1].

    Gathered in small chunks that stay in cache (~40x faster than one gather), on all cores
    (numpy releases the GIL for the gather and the product).
    """
    sim = np.empty(len(pos1), dtype=np.float64)

    def chunk(start: int) -> None:
        end = start + _SIM_CHUNK
        sim[start:end] = np.einsum("ij,ij->i", vectors[pos1[start:end]], vectors[pos2[start:end]])

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(chunk, range(0, len(pos1), _SIM_CHUNK)))
    return np.clip(sim, -1.0, 1.0)


def with_similarity(pairs: pa.Table, sim: np.ndarray, edges: list[float]) -> pa.Table:
    """Append ``content_sim`` and its ``sim_bucket`` to pair counts."""
    return pairs.append_column("content_sim", pa.array(sim)).append_column(
        "sim_bucket", pa.array(similarity_buckets(sim, edges)))


def compute_pairs(storage: Storage, dt: date | str, cfg: PairMiningSettings, engine: SqlEngine) -> MiningResult:
    """Run phases 1-3 on ``engine`` and return the outputs and counts (nothing is written)."""
    day = as_date(dt)
    days = window_days(day, cfg.window_days)
    _check_window(storage, days)
    stats = {"window_events": engine.register_partitions("events", storage, "events", days, EVENT_COLUMNS)}
    engine.register_table("items", _items_table(storage, day))
    q = load_queries("pair_mining")
    params = {
        "positive_completion": cfg.positive_completion, "negative_watch_s": cfg.negative_watch_s,
        "negative_completion": cfg.negative_completion, "max_positive_share": cfg.max_positive_share,
        "cap": cfg.max_positives_per_client, "salt": f"/{cfg.sample_seed}", "min_clients": cfg.min_clients,
    }

    engine.materialize("labeled", q["labeled"], params)
    engine.materialize("client_labels", q["client_labels"])
    engine.materialize("pair_interactions", q["pair_interactions"], params)
    stats |= _one_row(engine.query(q["labeled_stats"]))
    stats |= _one_row(engine.query(q["interaction_stats"]))
    stats["removed_high_positive_share_rows"] = stats.pop("labeled_rows") - stats["interactions"]
    stats["removed_high_positive_share_clients"] = stats.pop("labeled_clients") - stats["interaction_clients"]

    engine.materialize("interaction_items", q["interaction_items"])
    items = engine.query(q["pair_items"]).cast(ITEMS_SCHEMA)
    quarantine = engine.query(q["pair_items_quarantine"]).cast(QUARANTINE_SCHEMA)
    stats["items"] = items.num_rows
    stats["unknown_items"] = quarantine.num_rows
    stats["removed_unknown_item_rows"] = int(pc.sum(quarantine.column("interactions")).as_py() or 0)
    total_items = items.num_rows + quarantine.num_rows
    if total_items and quarantine.num_rows / total_items > cfg.max_unknown_item_share:
        raise ContractError(
            f"{quarantine.num_rows} of {total_items} items with interactions in {days[0]}..{day} are not in items "
            f"up to {day} (e.g. item_id {quarantine.column('item_id')[0]}), more than "
            f"pair_mining.max_unknown_item_share={cfg.max_unknown_item_share}: ingest the missing items first"
        )

    engine.materialize("positives", q["positives"], params)
    stats |= _one_row(engine.query(q["positive_stats"], params))
    stats["removed_by_cap"] = stats["positives_before_cap"] - stats["positives_kept"]
    engine.materialize("negative_sessions", q["negative_sessions"])
    engine.materialize_sliced("positive_pair_counts", q["positive_pair_counts"])
    engine.materialize("negative_pair_counts", q["negative_pair_counts"])
    candidates = {row["pair_type"]: int(row["candidates"])
                  for row in engine.query(q["candidate_stats"], params).to_pylist()}
    for t in ("positive", "negative"):
        stats[f"candidate_pairs_{t}"] = candidates.get(t, 0)

    kept = engine.query(q["pairs"], params)
    _, vectors = item_vectors(storage, day, "content", dim=None, item_ids=items.column("item_id").to_numpy())
    sim = content_similarity(l2_normalize(vectors), kept.column("position1").to_numpy(),
                             kept.column("position2").to_numpy())
    pairs = with_similarity(kept.select(PAIR_COUNTS_SCHEMA.names).cast(PAIR_COUNTS_SCHEMA), sim,
                            cfg.similarity_edges)
    stats["removed_below_min_clients"] = sum(candidates.values()) - pairs.num_rows
    interactions = engine.query(q["pair_interactions_sorted"]).cast(INTERACTIONS_SCHEMA)
    stats |= pair_counts(pairs, len(cfg.similarity_edges) - 1)
    return MiningResult(interactions, items, quarantine, pairs, stats)


def _type_masks(pairs: pa.Table) -> dict[str, np.ndarray]:
    """Boolean row mask per pair type (compared in Arrow: no Python string per row)."""
    types = pairs.column("pair_type")
    return {t: pc.equal(types, t).to_numpy(zero_copy_only=False) for t in ("positive", "negative")}


def pair_counts(pairs: pa.Table, n_buckets: int) -> dict[str, int]:
    """Pair counts in total, by type, by similarity bucket and by type x bucket."""
    buckets = pairs.column("sim_bucket").to_numpy()
    out = {"pairs": pairs.num_rows}
    for t, is_type in _type_masks(pairs).items():
        out[f"pairs_{t}"] = int(is_type.sum())
        for b in range(n_buckets):
            out[f"pairs_{t}_bucket_{b}"] = int((is_type & (buckets == b)).sum())
    for b in range(n_buckets):
        out[f"pairs_bucket_{b}"] = int((buckets == b).sum())
    return out


def _log_num_clients_hist(pairs: pa.Table) -> None:
    """Log a log-log histogram of num_clients per pair type as ``num_clients_hist.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, ax = plt.subplots(figsize=(7, 4))
    num = pairs.column("num_clients").to_numpy()
    top = int(num.max()) if len(num) else 1
    bins = np.unique(np.round(np.logspace(0, np.log10(top + 1), 40))).astype(int)
    for t, is_type in _type_masks(pairs).items():
        if is_type.any():
            ax.hist(num[is_type], bins=bins, alpha=0.6, label=f"{t} ({int(is_type.sum()):,})")
    ax.set(xscale="log", yscale="log", xlabel="num_clients", ylabel="pairs", title="Pairs by number of clients")
    if len(num):
        ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "num_clients_hist.png")
    plt.close(fig)


def mine_pairs(storage: Storage, dt: date | str, settings: Settings) -> dict[str, Any]:
    """Mine the pairs for ``dt`` over ``settings.pair_mining.window_days`` days; write and track them."""
    import mlflow

    from recsys_notify.tracking import log_partition_inputs, tracked_run

    cfg = settings.pair_mining
    day = as_date(dt)
    days = window_days(day, cfg.window_days)
    _check_window(storage, days)  # before opening a run: a missing input is not a mining attempt
    params = cfg.model_dump(exclude={"spark_conf"}) | {"dt": day.isoformat(), "window_start": days[0].isoformat()}
    with tracked_run(EXPERIMENT, f"pair_mining {day}", params=params, tags={"dt": day.isoformat()},
                     settings=settings) as run:
        engine = open_engine(cfg.engine, spark_master=cfg.spark_master, spark_remote=cfg.spark_remote,
                             spark_conf=cfg.spark_conf, duckdb_memory_limit=cfg.duckdb_memory_limit,
                             duckdb_threads=cfg.duckdb_threads)
        with engine:
            result = compute_pairs(storage, day, cfg, engine)
        meta = {"window": [days[0].isoformat(), day.isoformat()], "engine": cfg.engine}
        storage.write("pair_interactions", day, result.interactions, meta)
        storage.write("pair_items", day, result.items, meta)
        storage.write("pair_items_quarantine", day, result.quarantine, meta)
        storage.write("pairs", day, result.pairs, meta | {"similarity_edges": cfg.similarity_edges})

        log_partition_inputs(storage, "events", days, context="pair_mining")
        log_partition_inputs(storage, "items", [d for d in storage.dates("items") if d <= day], context="pair_mining")
        mlflow.log_metrics({k: float(v) for k, v in result.stats.items()})
        mlflow.log_dict(result.stats, "stats.json")
        if result.quarantine.num_rows:
            mlflow.log_table(result.quarantine.to_pandas(), "unknown_items.json")
        _log_num_clients_hist(result.pairs)
    return {
        "dt": day.isoformat(), "engine": cfg.engine, "window": meta["window"],
        **{k: result.stats[k] for k in ("interactions", "items", "unknown_items", "clients_capped",
                                        "pairs", "pairs_positive", "pairs_negative")},
        "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id,
    }


def same_topic_share(pairs: pd.DataFrame, truth_items: pd.DataFrame) -> dict[str, float]:
    """Evaluation on synthetic data only: share of pairs whose items share a ground-truth topic, by type."""
    topic = truth_items.set_index("item_id")["topic"]
    same = pairs["item1"].map(topic).to_numpy() == pairs["item2"].map(topic).to_numpy()
    return {t: float(same[(pairs["pair_type"] == t).to_numpy()].mean()) for t in ("positive", "negative")}
