"""Pair mining on DuckDB vs a straightforward pandas merge implementation, same data, same process.

Generates a synthetic world whose window holds >= 10M events (into a temp dir unless --data is
given and already populated), runs phases 1-3 once with each implementation (both read the same
Parquet partitions and end with the same similarity step), checks they agree and prints the
times and the ratio. Target: DuckDB >= 5x faster.

    PYTHONPATH=src python benchmarks/bench_pair_mining.py            # ~10.5M events, a few GB of RAM
    PYTHONPATH=src python benchmarks/bench_pair_mining.py --users 20000   # quick run
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_notify.config import PairMiningSettings
from recsys_notify.pair_mining import (EVENT_COLUMNS, PAIR_COUNTS_SCHEMA, _with_similarity, compute_pairs,
                                       window_days)
from recsys_notify.sql_engine import open_engine
from recsys_notify.storage import Storage
from recsys_notify.synthetic import GeneratorConfig, generate

END = date(2026, 11, 14)


def pandas_pairs(storage: Storage, dt: date, cfg: PairMiningSettings) -> pa.Table:
    """Phases 1-3 with pandas groupby/merge: the baseline a data scientist would write first."""
    days = window_days(dt, cfg.window_days)
    ev = pd.concat([storage.read("events", d, columns=EVENT_COLUMNS) for d in days], ignore_index=True)
    ev["watch_ms"] = np.round(ev["watch_time_s"] * 1000).astype(np.int64)  # exact sums, as the SQL's DECIMAL
    agg = ev.groupby(["user_id", "item_id"], as_index=False).agg(
        watch_ms=("watch_ms", "sum"), duration_s=("duration_s", "max"), liked=("liked", "any"))
    agg["watch_time_s"] = agg["watch_ms"] / 1000
    completion = agg["watch_time_s"] / agg["duration_s"]
    agg["label"] = np.select(
        [(completion > cfg.positive_completion) | agg["liked"],
         (agg["watch_time_s"] < cfg.negative_watch_s) | (completion < cfg.negative_completion)],
        ["positive", "negative"], "neutral")
    inter = agg[agg["label"] != "neutral"]
    share = (inter["label"] == "positive").groupby(inter["user_id"]).mean()
    inter = inter[inter["user_id"].map(share) <= cfg.max_positive_share]

    known = storage.read_upto("items", dt, columns=["item_id"])["item_id"]
    inter = inter[inter["item_id"].isin(known)]

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
    return _with_similarity(storage, dt, table, cfg.similarity_edges)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=280_000)  # >= 10M window events
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--data", help="data root to reuse (generated there if empty); default: a temp dir")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
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

        t, cpu = time.perf_counter(), time.process_time()
        with open_engine("duckdb", duckdb_threads=args.threads) as engine:
            duck = compute_pairs(storage, END, cfg, engine)
        duck_s, duck_cpu = time.perf_counter() - t, time.process_time() - cpu
        t, cpu = time.perf_counter(), time.process_time()
        base = pandas_pairs(storage, END, cfg)
        pandas_s, pandas_cpu = time.perf_counter() - t, time.process_time() - cpu

        same = duck.pairs.equals(base)
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"window events: {duck.stats['window_events']:,}  interactions: {duck.stats['interactions']:,}  "
              f"pairs: {duck.stats['pairs']:,} (positive {duck.stats['pairs_positive']:,}, "
              f"negative {duck.stats['pairs_negative']:,}), clients capped: {duck.stats['clients_capped']:,}")
        print(f"duckdb: {duck_s:.1f}s  pandas: {pandas_s:.1f}s  ratio pandas/duckdb: {pandas_s / duck_s:.1f}x "
              f"(target >= 5x)  outputs identical: {same}  peak RSS: {peak_gb:.1f} GB")
        print(f"CPU seconds (all threads): duckdb {duck_cpu:.1f}  pandas {pandas_cpu:.1f}  "
              f"ratio {pandas_cpu / duck_cpu:.1f}x  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        return 0 if same else 1
    finally:
        if not args.data:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
