"""Spike (issue 19): would Delta Lake (the ``deltalake`` package) remove our commit protocol at its root?

Not part of ``make bench`` (deltalake is not a project dependency): ``pip install deltalake`` into a scratch
venv, then ``python benchmarks/spike_delta.py --kills 100``. It measures the two things the decision rests on:

1. Kill safety of one step's outputs (four tables for one date, as global_medoids writes them): a child process
   (spawned: deltalake's runtime does not survive fork) overwrites the date's partition of each table in turn
   (``predicate`` overwrite) and is SIGKILLed after a seeded random delay once it is ready; the parent then
   reads the four tables and counts kills after which a reader sees
   (a) a torn table (rows of two runs in one table) and (b) a mix of runs across the four tables.
2. Commit latency of one date's overwrite, Delta vs plain Parquet files + a rename (our manifest commit).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

TABLES = ["global_clusters", "global_medoids", "templates", "overrides"]
DT = "20261114"


def frame(run: int, rows: int) -> pa.Table:
    return pa.table({"dt": pa.array([DT] * rows), "run": pa.array(np.full(rows, run, np.int64)),
                     "i": pa.array(np.arange(rows, dtype=np.int64))})


def write_step(root: str, run: int, rows: int) -> None:
    for name in TABLES:
        write_deltalake(f"{root}/{name}", frame(run, rows), mode="overwrite", predicate=f"dt = '{DT}'",
                        partition_by=["dt"])


def runs_seen(root: str) -> list[set[int]]:
    return [set(DeltaTable(f"{root}/{name}").to_pyarrow_table(columns=["run"]).column("run").to_pylist())
            for name in TABLES]


def child_step(root: str, run: int, rows: int) -> subprocess.Popen:
    """A writer in its own process, returned once it has imported everything (the kill lands in the write)."""
    child = subprocess.Popen([sys.executable, __file__, "--child", root, str(run), str(rows)],
                             stdout=subprocess.PIPE, text=True)
    child.stdout.readline()
    return child


def child_write_seconds(root: str, rows: int) -> float:
    """How long an undisturbed child writes the four tables (from ready to exit): the kills' time range."""
    child = child_step(root, 1, rows)
    started = time.perf_counter()
    child.wait()
    return time.perf_counter() - started


def kills(n: int, rows: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="delta-spike-")
    write_step(root, 0, rows)
    step_s = child_write_seconds(root, rows)
    torn = mixed = 0
    for k in range(n):
        child = child_step(root, k + 2, rows)
        time.sleep(rng.uniform(0, step_s * 1.2))
        child.kill()
        child.wait()
        seen = runs_seen(root)
        torn += any(len(s) > 1 for s in seen)
        mixed += len(set().union(*seen)) > 1
    return {"kills": n, "torn_table": torn, "mixed_runs_across_tables": mixed,
            "step_ms": round(step_s * 1000, 1)}


def latency(rows: int, rounds: int) -> dict[str, float]:
    root = tempfile.mkdtemp(prefix="delta-latency-")
    table = frame(0, rows)
    delta, parquet = [], []
    for r in range(rounds):
        t = time.perf_counter()
        write_deltalake(f"{root}/delta", table, mode="overwrite", predicate=f"dt = '{DT}'", partition_by=["dt"])
        delta.append(time.perf_counter() - t)
        t = time.perf_counter()
        staged = f"{root}/parquet/.dt={DT}.{r}"
        os.makedirs(staged)
        pq.write_table(table, f"{staged}/part-00000.parquet", compression="zstd")
        os.replace(staged, f"{root}/parquet/dt={DT}.v{r}")  # the manifest rename stands in for our commit
        parquet.append(time.perf_counter() - t)
    return {"rows": rows, "delta_ms": round(1000 * float(np.median(delta)), 1),
            "parquet_rename_ms": round(1000 * float(np.median(parquet)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "RUN", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("ready", flush=True)
        write_step(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    print("kills:", kills(args.kills, args.rows, args.seed))
    for rows in (2_000, 200_000):
        print("latency:", latency(rows, 5))


if __name__ == "__main__":
    main()
