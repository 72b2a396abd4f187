"""Pair mining compute: the SQL phases on an engine whose ``events`` and ``items`` tables are registered.

Phases (SQL in ``core/sql/pair_mining.sql``, run by DuckDB or Spark through :mod:`recsys_notify.core.sql_engine`):

1. ``pair_interactions``: the window's events per (client, item), labelled positive / negative /
   neutral; neutral rows and clients whose positive share is above the limit are dropped.
2. ``pair_items``: the items of phase 1 with their metadata; items unknown to ``items`` go to
   ``pair_items_quarantine`` and are counted (and fail the run above ``max_unknown_item_share``).
3. ``pairs``: positive pairs (two positives of one client, heavy clients capped to a deterministic
   sample) and negative pairs (two negatives in one session), counted in distinct clients, kept
   from ``min_clients`` up, with the content cosine similarity and its bucket.

No storage here: the step registers the tables, reads the vectors and writes the results.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_notify.core.config import PairMiningSettings
from recsys_notify.core.contract import ContractError
from recsys_notify.core.datasets import PAIR_INTERACTIONS, PAIR_ITEMS, PAIR_ITEMS_QUARANTINE, PAIRS, arrow_schema
from recsys_notify.core.sql_engine import SqlEngine, load_queries

EVENT_COLUMNS = ["user_id", "item_id", "session_id", "watch_time_s", "duration_s", "liked"]
ITEM_COLUMNS = ["item_id", "creator_id", "language", "duration_s"]
_SIM_CHUNK = 16_384


@dataclass
class MiningResult:
    """The three outputs (plus quarantine) of one mining run and its row counts."""

    interactions: pa.Table
    items: pa.Table
    quarantine: pa.Table
    pairs: pa.Table
    stats: dict[str, int]


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


@dataclass
class Counted:
    """Phases 1-3 before similarity: outputs so far, the kept pairs and counts."""

    interactions: pa.Table
    items: pa.Table
    quarantine: pa.Table
    kept: pa.Table
    candidates: dict[str, int]
    stats: dict[str, int]


def count_pairs(engine: SqlEngine, cfg: PairMiningSettings, window: str) -> Counted:
    """Run the SQL phases on ``engine`` (tables ``events`` and ``items`` registered); ``window`` names it in errors."""
    q = load_queries("pair_mining")
    params = {
        "positive_completion": cfg.positive_completion, "negative_watch_s": cfg.negative_watch_s,
        "negative_completion": cfg.negative_completion, "max_positive_share": cfg.max_positive_share,
        "cap": cfg.max_positives_per_client, "salt": f"/{cfg.sample_seed}", "min_clients": cfg.min_clients,
    }
    stats: dict[str, int] = {}
    engine.materialize("labeled", q["labeled"], params)
    engine.materialize("client_labels", q["client_labels"])
    engine.materialize("pair_interactions", q["pair_interactions"], params)
    stats |= _one_row(engine.query(q["labeled_stats"]))
    stats |= _one_row(engine.query(q["interaction_stats"]))
    stats["removed_high_positive_share_rows"] = stats.pop("labeled_rows") - stats["interactions"]
    stats["removed_high_positive_share_clients"] = stats.pop("labeled_clients") - stats["interaction_clients"]

    engine.materialize("interaction_items", q["interaction_items"])
    items = engine.query(q["pair_items"], order_by=["item_id"]).cast(arrow_schema(PAIR_ITEMS))
    quarantine = engine.query(q["pair_items_quarantine"], order_by=["item_id"]).cast(
        arrow_schema(PAIR_ITEMS_QUARANTINE))
    stats["items"] = items.num_rows
    stats["unknown_items"] = quarantine.num_rows
    stats["removed_unknown_item_rows"] = int(pc.sum(quarantine.column("interactions")).as_py() or 0)
    total_items = items.num_rows + quarantine.num_rows
    if total_items and quarantine.num_rows / total_items > cfg.max_unknown_item_share:
        raise ContractError(
            f"{quarantine.num_rows} of {total_items} items with interactions in {window} are not in items "
            f"(e.g. item_id {quarantine.column('item_id')[0]}), more than "
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
    kept = engine.query(q["pairs"], params, order_by=["item1", "item2", "pair_type"])  # negative before positive
    interactions = engine.query(q["pair_interactions_rows"], order_by=["user_id", "item_id"]).cast(
        arrow_schema(PAIR_INTERACTIONS))
    return Counted(interactions, items, quarantine, kept, candidates, stats)


def attach_similarity(counted: Counted, unit_vectors: np.ndarray, cfg: PairMiningSettings) -> MiningResult:
    """The final pairs: content cosine of each kept pair (``unit_vectors`` aligned with ``counted.items``)."""
    kept = counted.kept
    item_ids = counted.items.column("item_id").to_numpy()  # sorted and unique; every pair item is among them
    sim = content_similarity(unit_vectors, np.searchsorted(item_ids, kept.column("item1").to_numpy()),
                             np.searchsorted(item_ids, kept.column("item2").to_numpy()))
    counts_schema = arrow_schema(PAIRS, ["item1", "item2", "pair_type", "num_clients"])
    pairs = with_similarity(kept.select(counts_schema.names).cast(counts_schema), sim, cfg.similarity_edges)
    stats = dict(counted.stats)
    stats["removed_below_min_clients"] = sum(counted.candidates.values()) - pairs.num_rows
    stats |= pair_counts(pairs, len(cfg.similarity_edges) - 1)
    return MiningResult(counted.interactions, counted.items, counted.quarantine, pairs, stats)


def type_masks(pairs: pa.Table) -> dict[str, np.ndarray]:
    """Boolean row mask per pair type (compared in Arrow: no Python string per row)."""
    types = pairs.column("pair_type")
    return {t: pc.equal(types, t).to_numpy(zero_copy_only=False) for t in ("positive", "negative")}


def pair_counts(pairs: pa.Table, n_buckets: int) -> dict[str, int]:
    """Pair counts in total, by type, by similarity bucket and by type x bucket."""
    buckets = pairs.column("sim_bucket").to_numpy()
    out = {"pairs": pairs.num_rows}
    for t, is_type in type_masks(pairs).items():
        out[f"pairs_{t}"] = int(is_type.sum())
        for b in range(n_buckets):
            out[f"pairs_{t}_bucket_{b}"] = int((is_type & (buckets == b)).sum())
    for b in range(n_buckets):
        out[f"pairs_bucket_{b}"] = int((buckets == b).sum())
    return out


