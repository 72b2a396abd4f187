"""User medoid compute: a user's long-term interests as up to ``max_medoids`` items (arrays in, rows out).

Per user, over the window's weighted interactions: cluster the items' trimmed embeddings (DBSCAN
by default, HDBSCAN optional; noise kept as singleton clusters), then either

* ``sample`` (default for dbscan/hdbscan): split the slots across clusters proportionally to
  cluster size (largest remainder) and draw items inside each cluster by weighted sampling
  without replacement, deterministic per (user, date, seed); or
* ``pinnersage``: one exact medoid per cluster, keeping the clusters with the highest
  exponentially time-decayed importance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from recsys_notify.core.clustering import (
    Vectors,
    cosine_medoid_scores,
    dbscan_components,
    grouped_order,
    hdbscan_components,
    rank_within,
    row_labels,
)
from recsys_notify.core.config import UserMedoidSettings
from recsys_notify.core.datasets import USER_MEDOIDS
from recsys_notify.core.hashing import splitmix64
from recsys_notify.core.interaction_weights import utc_instants

SIZE_BINS = [1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 10**9]  # cluster-size histogram edges (left-closed)


@dataclass
class MedoidStats:
    """Counts of one computation; summed across shards."""

    users: int = 0
    users_skipped: int = 0
    users_with_medoids: int = 0
    interactions: int = 0
    clusters: int = 0
    noise_points: int = 0
    medoids: int = 0
    size_hist: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BINS) - 1))

    def add(self, other: "MedoidStats") -> "MedoidStats":
        merged = {k: getattr(self, k) + getattr(other, k) for k in ("users", "users_skipped", "users_with_medoids",
                                                                    "interactions", "clusters", "noise_points",
                                                                    "medoids")}
        return MedoidStats(**merged, size_hist=[a + b for a, b in zip(self.size_hist, other.size_hist)])


# ----- deterministic randomness -----

def uniform_keys(user_ids: np.ndarray, item_ids: np.ndarray, day: date, seed: int) -> np.ndarray:
    """A uniform (0, 1) number per (user, item) that depends only on (user, item, day, seed)."""
    base = splitmix64(np.array([day.toordinal() * 1_000_003 + seed], dtype=np.uint64))
    h = splitmix64(np.asarray(user_ids).astype(np.uint64) ^ base)
    h = splitmix64(h ^ np.asarray(item_ids).astype(np.uint64))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def _decayed(weight: np.ndarray, last_ts: np.ndarray, dt: date, decay_lambda: float) -> np.ndarray:
    """``weight * exp(-lambda * age in days)`` at the end of ``dt``, computed in place (a shard has ~10M rows)."""
    day_end = np.datetime64(dt + timedelta(days=1), "us")
    age = (day_end - last_ts.astype("datetime64[us]", copy=False)).astype(np.float64)
    age /= 86_400e6
    np.clip(age, 0, None, out=age)
    age *= -decay_lambda
    np.exp(age, out=age)
    age *= weight
    return age


# ----- allocation -----

def allocate_slots(cluster_user: np.ndarray, cluster_size: np.ndarray, user_items: np.ndarray,
                   max_slots: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Slots per cluster, proportional to size with largest-remainder rounding, per user.

    ``cluster_user`` indexes ``user_items`` (items per user); a user gets ``min(max_slots, items)``
    slots. Equal remainders go to the cluster with the larger ``tiebreak`` (e.g. total weight),
    then the earlier cluster. Example: sizes 30/40/50 with 12 slots -> 3/4/5.
    """
    n = len(cluster_user)
    slots = np.minimum(max_slots, user_items)
    raw = slots[cluster_user] * cluster_size / user_items[cluster_user]
    floor = np.floor(raw + 1e-9).astype(np.int64)
    remainder = raw - floor
    leftover = slots - np.bincount(cluster_user, weights=floor, minlength=len(user_items)).astype(np.int64)
    tiebreak = np.zeros(n) if tiebreak is None else tiebreak
    order = np.lexsort((np.arange(n), -tiebreak, -np.round(remainder, 9), cluster_user))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_within(cluster_user[order])
    return floor + (rank < leftover[cluster_user])


# ----- the computation -----

def compute_medoids(interactions: pd.DataFrame, X: Vectors, dt: date,
                    cfg: UserMedoidSettings) -> tuple[pd.DataFrame, MedoidStats]:
    """Medoids for every user in ``interactions`` (rows sorted by user; ``X`` aligned, unit vectors).

    ``interactions`` needs user_id, item_id, weight, last_ts. Returns the user_medoids rows and counts.
    """
    algorithm, seed = cfg.algorithm, cfg.seed
    stats = MedoidStats()
    user_ids = interactions["user_id"].to_numpy(np.int64)
    if len(X) != len(user_ids):
        raise ValueError(f"{len(X)} vectors for {len(user_ids)} interactions: rows must be aligned")
    if len(user_ids) and (np.diff(user_ids) < 0).any():
        raise ValueError("interactions must be sorted by user_id")
    starts = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]]) if len(user_ids) else np.zeros(0, np.int64)
    uniq, sizes = user_ids[starts], np.diff(np.r_[starts, len(user_ids)])  # runs of the sorted ids
    keep_user = sizes >= cfg.min_interactions
    stats.users, stats.users_skipped = len(uniq), int((~keep_user).sum())
    item_ids, weight = interactions["item_id"].to_numpy(np.int64), interactions["weight"].to_numpy(np.float64)
    decayed = _decayed(weight, utc_instants(interactions["last_ts"]), dt, cfg.decay_lambda)
    row_keep = None if keep_user.all() else np.repeat(keep_user, sizes)
    uniq, starts, sizes = uniq[keep_user], starts[keep_user], sizes[keep_user]
    stats.interactions = int(sizes.sum())
    if stats.interactions == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c not in ("weight", "importance") else "float64")
                             for c in USER_MEDOIDS.columns}), stats

    # Kept users are clustered where their rows are in X (a copy of X without the skipped users would be
    # the largest array of the shard); then every row array drops the skipped users' rows.
    if algorithm == "hdbscan":
        component, clustered = hdbscan_components(starts, sizes, X, cfg.hdbscan_min_cluster_size, cfg.min_samples)
    else:
        component, clustered = dbscan_components(starts, sizes, X, cfg.eps, cfg.min_samples)
    if row_keep is not None:
        kept_row = np.cumsum(row_keep) - 1  # a kept row's number among the kept rows
        component = kept_row[component[row_keep]]  # a kept row's component is a kept row (of its own user)
        user_ids, item_ids, weight, decayed, clustered = (a[row_keep] for a in (user_ids, item_ids, weight, decayed,
                                                                                  clustered))
        X = X[row_keep] if algorithm == "pinnersage" else X
    user_row = np.repeat(np.arange(len(uniq)), sizes)

    cluster_keys, cluster_of_row, cluster_size = row_labels(component)
    n_clusters = len(cluster_keys)
    cluster_user = np.zeros(n_clusters, dtype=np.int64)
    cluster_user[cluster_of_row] = user_row
    cluster_importance = np.bincount(cluster_of_row, weights=decayed, minlength=n_clusters)
    cluster_weight = np.bincount(cluster_of_row, weights=weight, minlength=n_clusters)
    user_importance = np.bincount(cluster_user, weights=cluster_importance, minlength=len(uniq))
    importance = cluster_importance / np.where(user_importance > 0, user_importance, 1)[cluster_user]
    stats.clusters = n_clusters
    stats.noise_points = int(((cluster_size[cluster_of_row] == 1) & ~clustered).sum())
    stats.size_hist = np.histogram(cluster_size, bins=SIZE_BINS)[0].astype(int).tolist()

    # local cluster ids: per user by size, then importance (0 = largest)
    order = np.lexsort((np.arange(n_clusters), -importance, -cluster_size, cluster_user))
    local_id = np.empty(n_clusters, dtype=np.int64)
    local_id[order] = rank_within(cluster_user[order])

    if algorithm == "pinnersage":
        pick_cluster = np.zeros(n_clusters, dtype=bool)
        by_importance = np.lexsort((local_id, -importance, cluster_user))
        pick_cluster[by_importance[rank_within(cluster_user[by_importance]) < cfg.max_medoids]] = True
        quota = pick_cluster.astype(np.int64)
    else:
        quota = allocate_slots(cluster_user, cluster_size, sizes, cfg.max_medoids, tiebreak=cluster_weight)
    live = np.flatnonzero(quota[cluster_of_row] > 0)  # only rows of clusters given slots are ranked
    live_cluster = cluster_of_row[live]
    if algorithm == "pinnersage":
        score = cosine_medoid_scores(live_cluster, X[live], n_clusters)
        row_order = live[np.lexsort((-weight[live], -score, live_cluster))]
    else:
        keys = uniform_keys(user_ids=user_ids[live], item_ids=item_ids[live], day=dt, seed=seed)
        sampling_key = np.log(keys) / weight[live]  # Efraimidis-Spirakis: top keys = weighted sample w/o replacement
        row_order = live[grouped_order(live_cluster, -sampling_key)]
    pos_in_cluster = np.zeros(len(user_ids), dtype=np.int64)  # never below the quota 0 of a cluster without slots
    pos_in_cluster[row_order] = rank_within(cluster_of_row[row_order])
    chosen = np.flatnonzero(pos_in_cluster < quota[cluster_of_row])

    chosen_cluster = cluster_of_row[chosen]
    chosen = chosen[np.lexsort((pos_in_cluster[chosen], local_id[chosen_cluster], -importance[chosen_cluster],
                                user_row[chosen]))]  # rank: important clusters first
    chosen_cluster = cluster_of_row[chosen]
    out = pd.DataFrame({
        "user_id": user_ids[chosen],
        "item_id": item_ids[chosen],
        "cluster_id": local_id[chosen_cluster],
        "cluster_size": cluster_size[chosen_cluster].astype(np.int64),
        "weight": weight[chosen],
        "importance": importance[chosen_cluster],
        "rank": rank_within(user_row[chosen]) + 1,
    }, copy=False)
    stats.medoids = len(out)
    stats.users_with_medoids = int(out["user_id"].nunique())
    return out, stats
