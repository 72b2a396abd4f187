"""Global medoid refresh core: faiss KMeans (k=500) + exact per-(cluster, language) 1-medoids.

Prints the time for ``--items`` unique medoid items and the speed ratio of the O(m d) cosine
1-medoid (``x_i . sum_j x_j``) against the O(m^2 d) pairwise-distance medoid on the same clusters.

    python benchmarks/bench_global_medoids.py               # ~30 s
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from recsys_notify.core.embeddings import l2_normalize  # noqa: E402
from recsys_notify.global_medoids.medoids import kmeans, representatives  # noqa: E402


def pairwise_medoids(cluster: np.ndarray, X: np.ndarray) -> dict[int, int]:
    """Reference: medoid by summing the full distance matrix of each cluster."""
    out = {}
    for c in np.unique(cluster):
        members = np.flatnonzero(cluster == c)
        out[int(c)] = int(members[np.argmin((1 - X[members] @ X[members].T).sum(axis=1))])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--k", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(60, 16)) * 1.6
    X = l2_normalize((centres[rng.integers(0, 60, args.items)] + rng.normal(size=(args.items, 16))).astype(np.float32))
    langs = rng.choice(np.array(["en", "es", "pt", "hi", "id", "ru", "de"]), args.items)
    items = np.arange(args.items, dtype=np.int64)

    t0 = time.perf_counter()
    centroids, assign, _ = kmeans(X, args.k, niter=20, seed=0)
    t_kmeans = time.perf_counter() - t0
    t0 = time.perf_counter()
    reps = representatives(assign, X, items, langs, np.zeros(args.items, bool))
    t_reps = time.perf_counter() - t0
    print(f"{args.items:,} items, k={len(centroids)}: faiss KMeans {t_kmeans:.1f} s, "
          f"{len(reps):,} representatives (cluster x language) {t_reps:.2f} s")

    t0 = time.perf_counter()
    reference = pairwise_medoids(assign, X)
    t_pair = time.perf_counter() - t0
    star = reps[reps["language"] == "*"].set_index("cluster_id")["item_id"]
    agree = np.mean([star[c] == i for c, i in reference.items()])
    print(f"pairwise O(m^2) medoids (\"*\" rows only): {t_pair:.2f} s; same medoid for {agree:.1%} of clusters")
    print(f"SPEED RATIO linear cosine medoid vs pairwise: {t_pair / t_reps:.1f}x "
          f"(linear one also computes the per-language rows)")


if __name__ == "__main__":
    main()
