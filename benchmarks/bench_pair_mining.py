"""Pair mining on DuckDB vs a straightforward pandas merge implementation, same data, same process.

Generates a synthetic world whose window holds >= 10M events (into a temp dir unless --data is
given and already populated), runs phases 1-3 with each implementation in alternating rounds
(both read the same Parquet partitions, produce the same three outputs and end with the same
similarity step), checks the outputs are identical
and prints the times, the ratio per round and the median ratio. Target: DuckDB >= 5x faster.

    PYTHONPATH=src python benchmarks/bench_pair_mining.py   # 11.2M window events, ~10 GB RAM (pandas), ~4 min
    PYTHONPATH=src python benchmarks/bench_pair_mining.py --users 20000 --rounds 1   # quick run
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_notify.core.config import PairMiningSettings
from recsys_notify.core.datasets import PAIR_INTERACTIONS, PAIR_ITEMS, PAIRS, arrow_schema
from recsys_notify.core.embeddings import VECTORS, item_vectors, l2_normalize, vectors_request
from recsys_notify.core.inputs import resolve
from recsys_notify.core.sql_engine import open_engine
from recsys_notify.core.storage import Storage
from recsys_notify.pair_mining.mining import (
    EVENT_COLUMNS,
    ITEM_COLUMNS,
    MiningResult,
    content_similarity,
    with_similarity,
)
from recsys_notify.pair_mining.step import compute_pairs
from recsys_notify.synthetic import GeneratorConfig, generate

INTERACTIONS_SCHEMA, ITEMS_SCHEMA = arrow_schema(PAIR_INTERACTIONS), arrow_schema(PAIR_ITEMS)
PAIR_COUNTS_SCHEMA = arrow_schema(PAIRS, ["item1", "item2", "pair_type", "num_clients"])

END = date(2026, 11, 14)


def pandas_mining(storage: Storage, dt: date, cfg: PairMiningSettings) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Phases 1-3 with pandas groupby/merge, the baseline a data scientist would write first.

    Returns what the step writes: the phase 1 interactions, the phase 2 items, the phase 3 pairs.
    """
    days = [dt - timedelta(days=i) for i in range(cfg.window_days - 1, -1, -1)]
    ev = pd.concat([storage.read("events", d, columns=EVENT_COLUMNS) for d in days], ignore_index=True)
    ev["watch_ms"] = np.round(ev["watch_time_s"] * 1000).astype(np.int64)  # exact integer sums, as in the SQL
    agg = ev.groupby(["user_id", "item_id"], as_index=False).agg(
        events=("item_id", "size"), watch_ms=("watch_ms", "sum"), duration_s=("duration_s", "max"),
        liked=("liked", "any"))
    agg["watch_time_s"] = agg["watch_ms"] / 1000
    agg["completion"] = agg["watch_time_s"] / agg["duration_s"]
    agg["label"] = np.select(
        [(agg["completion"] > cfg.positive_completion) | agg["liked"],
         (agg["watch_time_s"] < cfg.negative_watch_s) | (agg["completion"] < cfg.negative_completion)],
        ["positive", "negative"], "neutral")
    inter = agg[agg["label"] != "neutral"]
    share = (inter["label"] == "positive").groupby(inter["user_id"]).mean()
    inter = inter[inter["user_id"].map(share) <= cfg.max_positive_share]
    interactions = pa.Table.from_pandas(inter.sort_values(["user_id", "item_id"])[INTERACTIONS_SCHEMA.names],
                                        preserve_index=False).cast(INTERACTIONS_SCHEMA)

    catalogue = pd.concat([storage.read("items", d, columns=ITEM_COLUMNS).assign(items_dt=d)
                           for d in storage.dates("items") if d <= dt])
    catalogue = catalogue.sort_values("items_dt").drop_duplicates("item_id", keep="last")
    counts = inter.groupby("item_id").size().rename("interactions").reset_index()
    counts["clients"] = counts["interactions"]  # one row per (client, item)
    items = counts.merge(catalogue, on="item_id").sort_values("item_id")
    items = pa.Table.from_pandas(items[ITEMS_SCHEMA.names], preserve_index=False).cast(ITEMS_SCHEMA)
    inter = inter[inter["item_id"].isin(catalogue["item_id"])]

    pos = inter.loc[inter["label"] == "positive", ["user_id", "item_id"]]
    n_pos = pos.groupby("user_id")["item_id"].transform("size")
    heavy = pos[n_pos > cfg.max_positives_per_client].copy()
    heavy["key"] = [hashlib.md5(f"{u}/{i}/{cfg.sample_seed}".encode()).hexdigest()
                    for u, i in zip(heavy["user_id"], heavy["item_id"])]
    heavy = heavy.sort_values(["user_id", "key", "item_id"]).groupby("user_id").head(cfg.max_positives_per_client)
    pos = pd.concat([pos[n_pos <= cfg.max_positives_per_client], heavy[["user_id", "item_id"]]])
    pp = pos.merge(pos, on="user_id")
    pp = pp[pp["item_id_x"] < pp["item_id_y"]]
    pos_pairs = pp.groupby(["item_id_x", "item_id_y"]).size().rename("num_clients").reset_index()
    pos_pairs["pair_type"] = "positive"

    neg = inter.loc[inter["label"] == "negative", ["user_id", "item_id"]]
    sessions = ev[["user_id", "session_id", "item_id"]].merge(neg, on=["user_id", "item_id"]).drop_duplicates()
    nn = sessions.merge(sessions, on=["user_id", "session_id"])
    nn = nn[nn["item_id_x"] < nn["item_id_y"]].drop_duplicates(["item_id_x", "item_id_y", "user_id"])
    neg_pairs = nn.groupby(["item_id_x", "item_id_y"]).size().rename("num_clients").reset_index()
    neg_pairs["pair_type"] = "negative"

    pairs = pd.concat([pos_pairs, neg_pairs]).rename(columns={"item_id_x": "item1", "item_id_y": "item2"})
    pairs = pairs[pairs["num_clients"] >= cfg.min_clients].sort_values(["item1", "item2", "pair_type"])
    table = pa.Table.from_pandas(pairs[PAIR_COUNTS_SCHEMA.names], preserve_index=False).cast(PAIR_COUNTS_SCHEMA)
    item1, item2 = table.column("item1").to_numpy(), table.column("item2").to_numpy()
    ids, matrix = item_vectors(resolve(storage, {VECTORS: vectors_request("content", dt)}), "content", dim=None,
                               item_ids=np.unique(np.concatenate([item1, item2])))
    sim = content_similarity(l2_normalize(matrix), np.searchsorted(ids, item1), np.searchsorted(ids, item2))
    return interactions, items, with_similarity(table, sim, cfg.similarity_edges)


def _timed(fn):
    """``fn()`` with its wall and CPU (all threads) seconds."""
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=280_000)  # >= 10M window events
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--data", help="data root to reuse (generated there if empty); default: a temp dir")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating DuckDB/pandas rounds; their median ratio evens out a drifting machine")
    args = parser.parse_args()

    root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-pairs-"))
    storage = Storage(str(root))
    try:
        if not storage.dates("events"):
            t = time.perf_counter()
            counts = generate(storage, GeneratorConfig(users=args.users, items=args.items, days=args.window_days,
                                                       end=END, seed=1))
            print(f"generated {counts['events']:,} events for {args.users:,} users in {time.perf_counter() - t:.0f}s")
        cfg = PairMiningSettings(window_days=args.window_days, duckdb_threads=args.threads)

        def duckdb_run() -> MiningResult:
            with open_engine("duckdb", duckdb_threads=args.threads) as engine:
                return compute_pairs(storage, END, cfg, engine)

        ratios, same = [], True
        for round_no in range(1, args.rounds + 1):
            duck, duck_s, duck_cpu = _timed(duckdb_run)
            base, pandas_s, pandas_cpu = _timed(lambda: pandas_mining(storage, END, cfg))
            same = same and all(a.equals(b) for a, b in zip((duck.interactions, duck.items, duck.pairs), base))
            ratios.append(pandas_s / duck_s)
            print(f"round {round_no}: duckdb {duck_s:.1f}s ({duck_cpu:.1f} CPU s)  pandas {pandas_s:.1f}s "
                  f"({pandas_cpu:.1f} CPU s)  ratio {ratios[-1]:.1f}x  (load average {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} cores)", flush=True)
            del base

        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"window events: {duck.stats['window_events']:,}  interactions: {duck.stats['interactions']:,}  "
              f"pairs: {duck.stats['pairs']:,} (positive {duck.stats['pairs_positive']:,}, "
              f"negative {duck.stats['pairs_negative']:,}), clients capped: {duck.stats['clients_capped']:,}")
        print(f"ratio pandas/duckdb, median of {len(ratios)} round(s): {statistics.median(ratios):.1f}x "
              f"(target >= 5x)  outputs identical: {same}  peak RSS: {peak_gb:.1f} GB")
        return 0 if same else 1
    finally:
        if not args.data:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
