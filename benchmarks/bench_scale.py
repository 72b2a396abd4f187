"""Cost curve by users: user medoids, global medoids, notifications, pair mining on DuckDB and Spark local.

For each size (``--sizes``, users) a synthetic world of ``--days`` days is generated (untimed;
events bucketed by user), then every step runs in fresh processes so its wall time, CPU time
(the process and its children, the Spark JVM included) and peak RSS are its own:

* ``user_medoids``: ``--shards`` tasks (default ``--workers``) on ``--workers`` processes in parallel
  (mapped tasks on that many workers, each reading only its buckets), then ``finish`` (combine,
  MLflow); peak RSS = the largest process;
* ``notifications``: ``prepare`` (item popularity), ``--shards`` tasks on ``--workers`` processes, ``finish``;
  first, untimed, the earlier popularity days' ``item_positives`` and ``frames_trimmed`` (what the daily
  runs before it left), so ``prepare`` scans one day of events and trims one day of frames, as day to day;
* ``global_medoids``: the step's ``run`` (one process);
* ``pair_mining_duckdb`` / ``pair_mining_spark``: ``compute_pairs`` on DuckDB and on Spark
  ``local[--workers]`` over the same events.

First, the machine's cost of first-touching memory (:func:`first_touch`), against which wall times on
a VM are read. Printed per size and step: wall s, CPU s, peak RSS, CPU microseconds per user; per step the fitted
growth exponent ``b`` of ``wall ~ users^b``; then the issue-20 targets as measured in this run
(never extrapolated), each beside a baseline run in this process: notifications against a
per-user loop (``bench_notifications.naive`` on ``--baseline-users`` users), global medoids
(``--global-items`` x 16, k=500) against scikit-learn KMeans + brute-force medoids, Spark pair
mining against DuckDB. ``--json`` writes every figure for docs/scale.md.

    PYTHONPATH=src python benchmarks/bench_scale.py --sizes 2000 5000 --global-items 20000   # ~2 min
    PYTHONPATH=src nice -n 19 python benchmarks/bench_scale.py          # 0.1M 0.3M 1M 3M users: hours
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

END = date(2026, 11, 14)  # bench_notifications.naive reads this date too
STEPS = ["user_medoids", "global_medoids", "notifications", "pair_mining_duckdb", "pair_mining_spark"]
SPARK_CONF = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}


# ----- what runs in the child processes -----

def _settings(root: str, days: int, workers: int, shards: int | None = None) -> Any:
    from recsys_notify.core.config import Settings

    settings = Settings(data_root=root)
    settings.user_medoids.window_days = days
    settings.user_medoids.shards = shards or workers
    settings.notifications.shards = shards or workers
    settings.pair_mining.window_days = days
    settings.pair_mining.spark_master = f"local[{workers}]"
    settings.pair_mining.spark_conf = SPARK_CONF
    settings.notifications.history_days = days
    settings.notifications.popularity_days = min(7, days)
    settings.notifications.use_champion = False
    return settings


def _usage(started: tuple[float, float]) -> dict[str, float]:
    """Wall and CPU since ``started`` (this process, its children and live descendants such as a JVM), peak RSS."""
    import psutil

    me = psutil.Process()
    cpu = sum(me.cpu_times()[:4])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for child in me.children(recursive=True):
        try:
            cpu += sum(child.cpu_times()[:2])
            rss += child.memory_info().rss  # a live JVM: its current size, near its peak
        except psutil.Error:
            continue
    return {"wall_s": time.perf_counter() - started[0], "cpu_s": cpu - started[1], "peak_rss_gb": rss / 1e9}


def _start() -> tuple[float, float]:
    import psutil

    return time.perf_counter(), sum(psutil.Process().cpu_times()[:4])


def generate_world(root: str, users: int, items: int, days: int) -> dict[str, Any]:
    import mlflow

    from recsys_notify.core import tracking
    from recsys_notify.core.config import Settings
    from recsys_notify.core.storage import Storage
    from recsys_notify.synthetic import GeneratorConfig, generate

    t = _start()
    counts = generate(Storage(root), GeneratorConfig(users=users, items=items, days=days, end=END, seed=1))
    tracking.configure(Settings(data_root=root))
    mlflow.search_experiments()  # create the MLflow store once, outside the timed steps
    return {**counts, **_usage(t)}


def step_part(name: str, root: str, days: int, workers: int, part: int | None = None,
              shards: int | None = None) -> dict[str, Any]:
    """One timed unit of work in this (fresh) process."""
    from recsys_notify.core.sql_engine import open_engine
    from recsys_notify.core.storage import Storage
    from recsys_notify.global_medoids import step as global_medoids
    from recsys_notify.notifications import step as notifications
    from recsys_notify.pair_mining.step import compute_pairs
    from recsys_notify.user_medoids import step as user_medoids

    storage, settings = Storage(root), _settings(root, days, workers, shards)
    t = _start()
    extra: dict[str, Any] = {}
    steps = {"user_medoids": user_medoids, "notifications": notifications}
    if name.endswith("_prepare"):
        extra = steps[name.removesuffix("_prepare")].prepare(storage, settings, END)
    elif name.endswith("_part"):
        extra = steps[name.removesuffix("_part")].run_part(storage, settings, END, None, part)
    elif name.endswith("_finish"):
        extra = steps[name.removesuffix("_finish")].finish(storage, settings, END).summary
    elif name == "global_medoids":
        extra = global_medoids.run(storage, settings, END).summary
    elif name.startswith("pair_mining_"):
        cfg = settings.pair_mining
        with open_engine(name.removeprefix("pair_mining_"), spark_master=cfg.spark_master,  # type: ignore[arg-type]
                         spark_conf=cfg.spark_conf) as engine:
            extra = compute_pairs(storage, END, cfg, engine).stats
            usage = _usage(t)  # before the session ends: the JVM's CPU counts
        return {**usage, "pairs": extra["pairs"], "window_events": extra["window_events"]}
    elif name == "notifications_earlier_days":
        for back in range(1, settings.notifications.popularity_days):
            notifications.commit_day(storage, settings, END - timedelta(days=back))
    elif name == "notifications_loop":
        from bench_notifications import naive

        return {"per_user_s": naive(storage, settings, part or 2000), **_usage(t)}
    keep = {k: v for k, v in extra.items() if isinstance(v, (int, float, str))}
    return {**_usage(t), **keep}


def global_medoids_vs_sklearn(items: int, k: int) -> dict[str, float]:
    """faiss KMeans + linear cosine medoids against sklearn KMeans + brute-force medoids, same data."""
    from bench_global_medoids import pairwise_medoids
    from sklearn.cluster import KMeans

    from recsys_notify.core.embeddings import l2_normalize
    from recsys_notify.global_medoids.medoids import kmeans, representatives

    rng = np.random.default_rng(0)
    X = l2_normalize((rng.normal(size=(60, 16))[rng.integers(0, 60, items)] * 1.6
                      + rng.normal(size=(items, 16))).astype(np.float32))
    langs = rng.choice(np.array(["en", "es", "pt", "hi", "id", "ru", "de"]), items)
    t = time.perf_counter()
    _, assign, _ = kmeans(X, k, niter=20, seed=0)
    representatives(assign, X, np.arange(items), langs, np.zeros(items, bool))
    ours = time.perf_counter() - t
    t = time.perf_counter()
    labels = KMeans(n_clusters=k, n_init=1, max_iter=20, random_state=0).fit(X).labels_
    pairwise_medoids(labels, X)
    base = time.perf_counter() - t
    return {"items": items, "ours_s": ours, "sklearn_s": base, "ratio": base / ours}


def first_touch(gb: int = 1, idle_s: float = 20.0) -> dict[str, float]:
    """Seconds per GB to fill memory new to this process after ``idle_s`` of idling, then to fill it again.

    A task pays the first rate for the part of its peak RSS that no process freed just before it. On a
    VM whose guest hands freed pages back to its host (free page reporting, as on this project's
    Firecracker sandboxes, within seconds) it is ~50x the second, so the wall figures are read beside it.
    """
    time.sleep(idle_s)
    t = time.perf_counter()
    block = np.ones(gb << 27)  # float64: 2**27 values per GB
    fresh = time.perf_counter() - t
    t = time.perf_counter()
    block[:] = 2.0
    return {"fresh_s_per_gb": fresh / gb, "reused_s_per_gb": (time.perf_counter() - t) / gb}


# ----- orchestration -----

def _fresh(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _world(root: str, users: int, items: int, days: int) -> dict[str, Any]:
    """Generate the world in ``root`` once; a kept world is reused (its counts are stored beside it)."""
    saved = Path(root) / "world.json"
    if saved.exists():
        return json.loads(saved.read_text())
    world = _fresh(generate_world, root, users, items, days)
    saved.write_text(json.dumps(world))
    return world


def sharded(step: str, root: str, days: int, workers: int, shards: int) -> dict[str, Any]:
    """``prepare`` (if the step has one), ``shards`` tasks on ``workers`` processes (fresh per task), ``finish``.

    Wall = the whole; CPU = the sum of every task's; peak RSS = the largest task's.
    """
    if step == "notifications":  # what the daily runs before END committed: positives and trimmed frames
        _fresh(step_part, "notifications_earlier_days", root, days, workers)
    t = time.perf_counter()
    tasks = [_fresh(step_part, f"{step}_prepare", root, days, workers, None, shards)] if step == "notifications" else []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        parts = list(pool.map(step_part, [f"{step}_part"] * shards, [root] * shards, [days] * shards,
                              [workers] * shards, range(shards), [shards] * shards))
    done = _fresh(step_part, f"{step}_finish", root, days, workers, None, shards)
    tasks += [*parts, done]
    return {**{k: v for k, v in done.items() if k not in ("wall_s", "cpu_s", "peak_rss_gb")},
            "wall_s": time.perf_counter() - t, "cpu_s": sum(p["cpu_s"] for p in tasks),
            "peak_rss_gb": max(p["peak_rss_gb"] for p in tasks), "shards_wall_s": max(p["wall_s"] for p in parts),
            "finish_wall_s": done["wall_s"], "prepare_wall_s": tasks[0]["wall_s"] if len(tasks) > len(parts) + 1
            else 0.0}


def exponent(users: list[int], walls: list[float]) -> float:
    """Least-squares slope of log(wall) on log(users)."""
    return float(np.polyfit(np.log(users), np.log(walls), 1)[0]) if len(users) > 1 else math.nan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000, 3_000_000])
    parser.add_argument("--days", type=int, default=7, help="days generated = every step's window")
    parser.add_argument("--workers", type=int, default=2, help="user-medoid shards in parallel; Spark local[N]")
    parser.add_argument("--shards", type=int, help="user-medoid and notification shards (default: --workers); "
                        "more bound memory")
    parser.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    parser.add_argument("--baseline-users", type=int, default=2000, help="users in the notifications loop baseline")
    parser.add_argument("--global-items", type=int, default=1_000_000, help="0 skips the sklearn comparison")
    parser.add_argument("--json", help="write all figures here")
    parser.add_argument("--worlds", help="keep each generated world under this folder and reuse it on the next "
                        "run with the same size and --days (steps replace their outputs)")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    results: dict[str, Any] = {"args": vars(args), "sizes": {}, "cores": os.cpu_count(),
                               "first_touch": _fresh(first_touch)}
    touch = results["first_touch"]
    print(f"memory of a fresh process after 20 s idle: first touch {touch['fresh_s_per_gb']:.2f} s/GB, "
          f"touched again {touch['reused_s_per_gb']:.2f} s/GB", flush=True)

    for users in sorted(args.sizes):
        items = int(np.clip(users // 5, 20_000, 200_000))
        root = (str(Path(args.worlds) / f"users{users}-days{args.days}") if args.worlds
                else tempfile.mkdtemp(prefix=f"bench-scale-{users}-"))
        try:
            world = _world(root, users, items, args.days)
            print(f"\n{users:,} users, {items:,} items, {world['events']:,} events over {args.days} days "
                  f"(generated in {world['wall_s']:.0f} s)", flush=True)
            size: dict[str, Any] = {"events": world["events"], "items": items}
            for step in STEPS:
                if step not in args.steps or (step == "notifications" and "global_medoids" not in size):
                    continue
                if step in ("user_medoids", "notifications"):
                    out = sharded(step, root, args.days, args.workers, args.shards or args.workers)
                else:
                    out = _fresh(step_part, step, root, args.days, args.workers)
                size[step] = out
                print(f"  {step:20s} {out['wall_s']:8.1f} s wall {out['cpu_s']:8.1f} s CPU "
                      f"{out['peak_rss_gb']:6.2f} GB peak RSS  {out['cpu_s'] / users * 1e6:8.1f} CPU us/user",
                      flush=True)
            if "notifications" in size and "notifications_loop_per_user_s" not in results:
                loop = _fresh(step_part, "notifications_loop", root, args.days, args.workers, args.baseline_users)
                results["notifications_loop_per_user_s"] = loop["per_user_s"]  # linear in users: timed once
                print(f"  per-user loop baseline: {loop['per_user_s'] * 1e3:.2f} ms/user "
                      f"({args.baseline_users:,} users timed)", flush=True)
            results["sizes"][users] = size
            if args.json:  # after every size: a run stopped later keeps what it measured
                Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        finally:
            if not args.worlds:
                shutil.rmtree(root, ignore_errors=True)

    sizes = results["sizes"]
    print("\ngrowth exponent b (wall ~ users^b) over", ", ".join(f"{u:,}" for u in sizes))
    for step in args.steps:
        have = [(u, s[step]["wall_s"]) for u, s in sizes.items() if step in s]
        if have:
            b = exponent([u for u, _ in have], [w for _, w in have])
            results.setdefault("exponents", {})[step] = b
            print(f"  {step:20s} b = {b:.2f}")

    print(f"\ntargets (measured in this run, {args.workers} workers, {os.cpu_count()} cores):")
    big = sizes.get(1_000_000)
    for step, limit in (("user_medoids", 60), ("notifications", 30)):
        if big and step in big:
            wall = big[step]["wall_s"]
            print(f"  {step} 1M users: {wall:.1f} s -> {'PASS' if wall < limit else 'FAIL'} (< {limit} s)")
        else:
            print(f"  {step} 1M users: not measured in this run (sizes {list(sizes)})")
    for users, s in sizes.items():
        if "notifications" in s and "notifications_loop_per_user_s" in results:
            loop_s = results["notifications_loop_per_user_s"] * users
            s["notifications_loop_ratio"] = loop_s / s["notifications"]["wall_s"]
            print(f"  notifications {users:,} users: {s['notifications']['wall_s']:.1f} s; per-user loop "
                  f"{loop_s:.0f} s ({args.baseline_users:,} users timed x {users:,}) = "
                  f"{s['notifications_loop_ratio']:.1f}x")
    for users, s in sizes.items():
        if "pair_mining_duckdb" in s and "pair_mining_spark" in s:
            ratio = s["pair_mining_spark"]["wall_s"] / s["pair_mining_duckdb"]["wall_s"]
            s["spark_over_duckdb"] = ratio
            print(f"  pair mining {users:,} users: Spark local / DuckDB = {ratio:.2f}x "
                  f"-> {'PASS' if ratio <= 3 else 'FAIL'} (<= 3x)")
    if args.global_items:
        g = _fresh(global_medoids_vs_sklearn, args.global_items, 500)
        results["global_medoids_vs_sklearn"] = g
        print(f"  global medoids {g['items']:,} x 16, k=500: {g['ours_s']:.1f} s "
              f"-> {'PASS' if g['ours_s'] < 30 else 'FAIL'} (< 30 s); sklearn KMeans + brute-force medoids "
              f"{g['sklearn_s']:.1f} s = {g['ratio']:.1f}x -> {'PASS' if g['ratio'] >= 10 else 'FAIL'} (>= 10x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
