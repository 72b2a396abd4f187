"""Global medoid compute: spherical KMeans, stable cluster ids, representatives, ops replacements.

1. The unit vectors of every user-medoid item -> spherical faiss KMeans (``k`` capped by the items).
2. Cluster ids are matched to the previous refresh by Hungarian assignment on centroid cosine
   distance, so templates and overrides keep meaning; a match farther than
   ``match_max_distance`` gets a fresh id (ids are never reused).
3. Representatives: per cluster the exact cosine 1-medoid (``"*"``), and per language present
   in the cluster the item of that language with the least total distance to the whole cluster.
   Blocked items are never representatives; ops replacements in force override the choice.

Arrays and frames in, arrays and frames out: the step reads and writes.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from recsys_notify.core.clustering import cosine_medoid_scores
from recsys_notify.core.embeddings import l2_normalize

FAISS_MIN_POINTS_PER_CENTROID = 39  # faiss's default: below it, it warns that clusters are underdetermined
log = logging.getLogger(__name__)


def kmeans(X: np.ndarray, k: int, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical faiss KMeans; returns unit centroids of non-empty clusters, assignment, cosine distance."""
    import faiss

    k = min(k, len(X))
    if len(X) < k * FAISS_MIN_POINTS_PER_CENTROID:
        # faiss would print this to stderr on every run (an ERROR line in task logs); one log record instead
        log.warning("KMeans on %d vectors into k=%d clusters: fewer than %d per cluster, so clusters are noisy; "
                    "lower global_medoids.k for this much data", len(X), k, FAISS_MIN_POINTS_PER_CENTROID)
    km = faiss.Kmeans(X.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1)
    km.train(np.ascontiguousarray(X, dtype=np.float32))
    centroids = l2_normalize(km.centroids)
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(centroids)
    sims, assign = index.search(np.ascontiguousarray(X, dtype=np.float32), 1)
    used, assign = np.unique(assign[:, 0], return_inverse=True)
    return centroids[used], assign.astype(np.int64), (1.0 - sims[:, 0]).astype(np.float64)


def match_ids(centroids: np.ndarray, sizes: np.ndarray, prev_ids: np.ndarray, prev_centroids: np.ndarray,
              max_distance: float) -> tuple[np.ndarray, dict[str, float]]:
    """Stable ids: Hungarian match of new to previous centroids; unmatched clusters get fresh ids."""
    from scipy.optimize import linear_sum_assignment

    n = len(centroids)
    ids = np.full(n, -1, dtype=np.int64)
    quality = {"matched": 0.0, "new_clusters": float(n), "retired_clusters": float(len(prev_ids)),
               "centroid_drift_mean": 0.0, "centroid_drift_max": 0.0, "match_rate": 0.0}
    if len(prev_ids):
        cost = 1.0 - centroids.astype(np.float64) @ prev_centroids.astype(np.float64).T
        rows, cols = linear_sum_assignment(cost)
        good = cost[rows, cols] <= max_distance
        ids[rows[good]] = prev_ids[cols[good]]
        drift = np.clip(cost[rows[good], cols[good]], 0.0, None)
        quality.update({
            "matched": float(good.sum()), "new_clusters": float(n - good.sum()),
            "retired_clusters": float(len(prev_ids) - good.sum()),
            "centroid_drift_mean": float(drift.mean()) if len(drift) else 0.0,
            "centroid_drift_max": float(drift.max()) if len(drift) else 0.0,
            "match_rate": float(good.sum() / n),
            "assignment_cost_mean": float(np.clip(cost[rows, cols], 0.0, None).mean()),
        })
    fresh = np.flatnonzero(ids < 0)
    fresh = fresh[np.lexsort((fresh, -sizes[fresh]))]  # biggest new cluster gets the lowest new id
    start = int(prev_ids.max()) + 1 if len(prev_ids) else 0
    ids[fresh] = np.arange(start, start + len(fresh))
    return ids, quality


def representatives(cluster_ids: np.ndarray, X: np.ndarray, item_ids: np.ndarray, languages: np.ndarray,
                    blocked: np.ndarray) -> pd.DataFrame:
    """Exact cosine 1-medoid per cluster ("*") and per (cluster, language), skipping blocked items."""
    uniq, group = np.unique(cluster_ids, return_inverse=True)
    score = cosine_medoid_scores(group, X, len(uniq))
    frame = pd.DataFrame({"cluster_id": cluster_ids, "language": languages, "item_id": item_ids, "score": score,
                          "row": np.arange(len(item_ids))})
    size = frame.groupby("cluster_id").size().rename("cluster_size")
    lang_size = frame.groupby(["cluster_id", "language"]).size().rename("language_items")
    candidates = frame[~blocked].sort_values(["cluster_id", "score", "item_id"], ascending=[True, False, True])
    overall = candidates.groupby("cluster_id", sort=True).head(1).assign(language="*")
    per_lang = candidates.groupby(["cluster_id", "language"], sort=True).head(1)
    reps = pd.concat([overall, per_lang], ignore_index=True)
    reps = reps.join(size, on="cluster_id")
    reps["language_items"] = [int(lang_size.get((c, lang), 0)) if lang != "*" else int(size[c])
                              for c, lang in zip(reps["cluster_id"], reps["language"])]
    return reps.sort_values(["cluster_id", "language"]).reset_index(drop=True)


def wanted_replacements(reps: pd.DataFrame, in_force: pd.DataFrame, blocked: set[int]) -> tuple[pd.DataFrame, int]:
    """Replacements in force for live clusters (newest override per (cluster, language) wins) and the stale count."""
    wanted = in_force[in_force["action"] == "replace"].sort_values(["created_dt", "override_id"])
    wanted = wanted.drop_duplicates(["cluster_id", "language"], keep="last")
    wanted = wanted[~wanted["item_id"].astype("int64").isin(blocked)]
    live = set(reps["cluster_id"])
    stale = int((~wanted["cluster_id"].isin(live)).sum())
    return wanted[wanted["cluster_id"].isin(live)], stale


def apply_replacements(reps: pd.DataFrame, wanted: pd.DataFrame, vectors: dict[int, np.ndarray]) -> pd.DataFrame:
    """Put ops-chosen items (``wanted``, with their unit ``vectors``) in place of computed representatives."""
    if wanted.empty:
        return reps
    records = {(r["cluster_id"], r["language"]): r for r in reps.to_dict("records")}
    sizes = reps.groupby("cluster_id")["cluster_size"].first()
    for row in wanted.itertuples():
        key = (int(row.cluster_id), str(row.language))
        base = records.get(key, {"cluster_id": key[0], "language": key[1], "cluster_size": int(sizes[key[0]]),
                                 "language_items": 0})
        records[key] = {**base, "item_id": int(row.item_id), "vector": vectors[int(row.item_id)], "score": np.nan,
                        "source": "override", "override_id": row.override_id}
    out = pd.DataFrame(list(records.values()))
    return out.sort_values(["cluster_id", "language"]).reset_index(drop=True)
