"""User medoid computation: batched pipeline vs a naive per-user sklearn DBSCAN loop, and 1M-user time.

Synthetic users like the generator's (lognormal unique-item counts, 1-6 interest topics in a
16-dim trimmed embedding space plus exploration noise) are built in memory, so the benchmark
times the clustering and slot selection only (reading events is the storage layer's cost).

* ratio: ``compute_medoids`` (DBSCAN + allocation + weighted sampling for all users) against a
  loop calling ``sklearn.cluster.DBSCAN(metric="cosine")`` once per user on the same data -
  the loop does clustering only, so the ratio understates the naive pipeline's cost;
* scale: ``compute_medoids`` over ``--scale-users`` users in shard-sized batches, extrapolated
  linearly to 1M users, divided over 2 cores (shards are independent mapped tasks).

BLAS/OpenMP are pinned to one thread so a "core" means one core.

    python benchmarks/bench_user_medoids.py                      # ~2-3 min
    python benchmarks/bench_user_medoids.py --scale-users 1000000  # measure 1M directly (single core)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from recsys_notify.core.config import UserMedoidSettings  # noqa: E402
from recsys_notify.core.embeddings import l2_normalize  # noqa: E402
from recsys_notify.user_medoids.medoids import compute_medoids  # noqa: E402

DAY = date(2026, 11, 14)
TOPICS, DIM = 40, 16


def make_users(n_users: int, seed: int, first_user: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Interactions sorted by user with unit vectors (rows aligned)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(TOPICS, DIM)) * 1.6
    sizes = np.clip(rng.lognormal(np.log(30), 1.0, n_users), 1, 3000).astype(np.int64)
    user = np.repeat(np.arange(first_user, first_user + n_users, dtype=np.int64), sizes)
    n = len(user)
    interests = rng.integers(0, TOPICS, (n_users, 6))
    k = rng.integers(1, 7, n_users)
    pick = (rng.random(n) * np.repeat(k, sizes)).astype(np.int64)
    topic = interests[user - first_user, pick]
    topic = np.where(rng.random(n) < 0.15, rng.integers(0, TOPICS, n), topic)
    X = l2_normalize((centres[topic] + rng.normal(size=(n, DIM))).astype(np.float32))
    frame = pd.DataFrame({
        "user_id": user, "item_id": rng.integers(0, 10**7, n),
        "weight": rng.choice([1.0, 1.2, 1.5, 2.0, 2.5, 3.0], n, p=[0.5, 0.2, 0.15, 0.05, 0.07, 0.03]),
        "last_ts": pd.Timestamp("2026-11-14", tz="UTC") - pd.to_timedelta(rng.integers(0, 14 * 86400, n), unit="s"),
    })
    return frame, X


def naive_loop(frame: pd.DataFrame, X: np.ndarray, cfg: UserMedoidSettings) -> int:
    from sklearn.cluster import DBSCAN

    users, starts, sizes = np.unique(frame["user_id"].to_numpy(), return_index=True, return_counts=True)
    clusters = 0
    for s, n in zip(starts, sizes):
        if n < cfg.min_interactions:
            continue
        labels = DBSCAN(eps=cfg.eps, min_samples=cfg.min_samples, metric="cosine").fit(X[s:s + n]).labels_
        clusters += len(set(labels[labels >= 0].tolist())) + int((labels < 0).sum())
    return clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio-users", type=int, default=4000)
    parser.add_argument("--scale-users", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000, help="users per compute call (a shard's chunk)")
    args = parser.parse_args()
    cfg = UserMedoidSettings()

    frame, X = make_users(args.ratio_users, seed=1)
    print(f"ratio data: {args.ratio_users:,} users, {len(frame):,} unique interactions")
    t0 = time.perf_counter()
    naive_clusters = naive_loop(frame, X, cfg)
    naive_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    medoids, stats = compute_medoids(frame, X, DAY, cfg)
    ours_s = time.perf_counter() - t0
    assert stats.clusters == naive_clusters, (stats.clusters, naive_clusters)  # same clustering
    print(f"naive per-user sklearn DBSCAN loop (clustering only): {naive_s:8.2f} s")
    print(f"batched compute_medoids (clustering + selection):     {ours_s:8.2f} s  ({len(medoids):,} medoids)")
    print(f"SPEED RATIO vs naive loop: {naive_s / ours_s:.1f}x (target >= 10x)")

    done, rows, elapsed = 0, 0, 0.0
    while done < args.scale_users:
        n = min(args.batch, args.scale_users - done)
        frame, X = make_users(n, seed=100 + done, first_user=done)
        t0 = time.perf_counter()
        compute_medoids(frame, X, DAY, cfg)
        elapsed += time.perf_counter() - t0
        done += n
        rows += len(frame)
        del frame, X
    per_million = elapsed * 1_000_000 / done
    print(f"scale: {done:,} users ({rows:,} interactions) in {elapsed:.1f} s on 1 core")
    print(f"1M USERS: {per_million / 60:.2f} min on 1 core, {per_million / 2 / 60:.2f} min on 2 cores "
          f"({'measured' if done >= 1_000_000 else 'extrapolated linearly'}; target < 5 min)")


if __name__ == "__main__":
    main()
