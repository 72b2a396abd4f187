"""Daily user medoid refresh: a user's long-term interests as up to ``max_medoids`` items.

Per user, over the last ``window_days`` of events: weight each unique interaction, cluster the
items' trimmed embeddings (DBSCAN by default, HDBSCAN optional; noise kept as singleton
clusters), then either

* ``sample`` (default for dbscan/hdbscan): split the slots across clusters proportionally to
  cluster size (largest remainder) and draw items inside each cluster by weighted sampling
  without replacement, deterministic per (user, date, seed); or
* ``pinnersage``: one exact medoid per cluster, keeping the clusters with the highest
  exponentially time-decayed importance.

Work is sharded by a stable hash of the user id: :func:`run_shard` writes one shard's partial
dataset, :func:`combine` commits the ``user_medoids`` partition once, and logs the MLflow run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.clustering import cosine_medoid_scores, dbscan_components, hdbscan_components, rank_within
from recsys_notify.config import Settings, UserMedoidSettings
from recsys_notify.embeddings import item_vectors, l2_normalize
from recsys_notify.hashing import splitmix64
from recsys_notify.interaction_weights import read_window, weigh_interactions, window_start
from recsys_notify.storage import MissingPartitionError, Storage, as_date

EXPERIMENT = "user_medoids"
OUTPUT_COLUMNS = ["user_id", "item_id", "cluster_id", "cluster_size", "weight", "importance", "rank"]
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

def shard_of(user_ids: np.ndarray, shards: int) -> np.ndarray:
    """Stable shard of each user (independent of process, platform and Python's hash seed)."""
    return (splitmix64(np.asarray(user_ids).astype(np.uint64)) % np.uint64(shards)).astype(np.int64)


def uniform_keys(user_ids: np.ndarray, item_ids: np.ndarray, day: date, seed: int) -> np.ndarray:
    """A uniform (0, 1) number per (user, item) that depends only on (user, item, day, seed)."""
    base = splitmix64(np.array([day.toordinal() * 1_000_003 + seed], dtype=np.uint64))
    h = splitmix64(np.asarray(user_ids).astype(np.uint64) ^ base)
    h = splitmix64(h ^ np.asarray(item_ids).astype(np.uint64))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


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

def compute_medoids(interactions: pd.DataFrame, X: np.ndarray, dt: date, cfg: UserMedoidSettings,
                    algorithm: str | None = None, seed: int | None = None) -> tuple[pd.DataFrame, MedoidStats]:
    """Medoids for every user in ``interactions`` (rows sorted by user; ``X`` aligned, unit vectors).

    ``interactions`` needs user_id, item_id, weight, last_ts. Returns the user_medoids rows and counts.
    """
    algorithm = algorithm or cfg.algorithm
    seed = cfg.seed if seed is None else seed
    stats = MedoidStats()
    user_ids = interactions["user_id"].to_numpy(np.int64)
    if len(X) != len(user_ids):
        raise ValueError(f"{len(X)} vectors for {len(user_ids)} interactions: rows must be aligned")
    if len(user_ids) and (np.diff(user_ids) < 0).any():
        raise ValueError("interactions must be sorted by user_id")
    uniq, starts, sizes = np.unique(user_ids, return_index=True, return_counts=True)
    keep_user = sizes >= cfg.min_interactions
    stats.users, stats.users_skipped = len(uniq), int((~keep_user).sum())
    if not keep_user.all():
        row_keep = np.repeat(keep_user, sizes)
        interactions, X = interactions.loc[row_keep].reset_index(drop=True), X[row_keep]
    frame = interactions
    uniq, starts, sizes = uniq[keep_user], np.cumsum(np.r_[0, sizes[keep_user]])[:-1], sizes[keep_user]
    stats.interactions = len(frame)
    if len(frame) == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c not in ("weight", "importance") else "float64")
                             for c in OUTPUT_COLUMNS}), stats

    if algorithm == "hdbscan":
        component, clustered = hdbscan_components(starts, sizes, X, cfg.hdbscan_min_cluster_size, cfg.min_samples)
    else:
        component, clustered = dbscan_components(starts, sizes, X, cfg.eps, cfg.min_samples)
    user_row = np.repeat(np.arange(len(uniq)), sizes)
    weight = frame["weight"].to_numpy(np.float64)
    day_end = np.datetime64(dt + timedelta(days=1), "us")
    last_ts = frame["last_ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    age_days = (day_end - last_ts).astype(np.float64) / 86_400e6
    decayed = weight * np.exp(-cfg.decay_lambda * np.clip(age_days, 0, None))

    cluster_keys, cluster_of_row, cluster_size = np.unique(component, return_inverse=True, return_counts=True)
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

    keys = uniform_keys(user_ids=frame["user_id"].to_numpy(), item_ids=frame["item_id"].to_numpy(), day=dt, seed=seed)
    if algorithm == "pinnersage":
        score = cosine_medoid_scores(cluster_of_row, X, n_clusters)
        row_order = np.lexsort((-weight, -score, cluster_of_row))
        pick_cluster = np.zeros(n_clusters, dtype=bool)
        by_importance = np.lexsort((local_id, -importance, cluster_user))
        pick_cluster[by_importance[rank_within(cluster_user[by_importance]) < cfg.max_medoids]] = True
        quota = pick_cluster.astype(np.int64)
    else:
        sampling_key = np.log(keys) / weight  # Efraimidis-Spirakis: top keys = weighted sample w/o replacement
        row_order = np.lexsort((-sampling_key, cluster_of_row))
        quota = allocate_slots(cluster_user, cluster_size, sizes, cfg.max_medoids, tiebreak=cluster_weight)
    pos_in_cluster = np.empty(len(frame), dtype=np.int64)
    pos_in_cluster[row_order] = rank_within(cluster_of_row[row_order])
    chosen = np.flatnonzero(pos_in_cluster < quota[cluster_of_row])

    chosen_cluster = cluster_of_row[chosen]
    chosen = chosen[np.lexsort((pos_in_cluster[chosen], local_id[chosen_cluster], -importance[chosen_cluster],
                                user_row[chosen]))]  # rank: important clusters first
    chosen_cluster = cluster_of_row[chosen]
    out = pd.DataFrame({
        "user_id": frame["user_id"].to_numpy(np.int64)[chosen],
        "item_id": frame["item_id"].to_numpy(np.int64)[chosen],
        "cluster_id": local_id[chosen_cluster],
        "cluster_size": cluster_size[chosen_cluster].astype(np.int64),
        "weight": weight[chosen],
        "importance": importance[chosen_cluster],
        "rank": rank_within(user_row[chosen]) + 1,
    })
    stats.medoids = len(out)
    stats.users_with_medoids = int(out["user_id"].nunique())
    return out, stats


def load_interactions(storage: Storage, settings: Settings, dt: date, shard: int = 0,
                      shards: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Weighted interactions of one shard's users and their unit item vectors (rows aligned)."""
    events = read_window(storage, dt, settings.user_medoids.window_days)
    events = events[shard_of(events["user_id"].to_numpy(), shards) == shard]
    interactions = weigh_interactions(events, settings.interaction_weights)
    if len(interactions) == 0:
        return interactions, np.zeros((0, settings.embedding.trimmed_dim), dtype=np.float32)
    items = np.unique(interactions["item_id"].to_numpy())
    ids, matrix = item_vectors(storage, dt, settings.embedding.source, settings.embedding.trimmed_dim, item_ids=items)
    X = l2_normalize(matrix)[np.searchsorted(ids, interactions["item_id"].to_numpy())]  # ids == sorted items
    return interactions, X


def shard_dataset(shard: int, shards: int) -> str:
    """Dataset holding one shard's partial output (a dataset per shard lets shards commit independently)."""
    return f"user_medoids_shard_{shard:03d}_of_{shards:03d}"


def run_params(settings: Settings, algorithm: str | None, seed: int | None) -> dict[str, Any]:
    cfg = settings.user_medoids
    return {
        "algorithm": algorithm or cfg.algorithm, "seed": cfg.seed if seed is None else seed,
        "eps": cfg.eps, "min_samples": cfg.min_samples, "hdbscan_min_cluster_size": cfg.hdbscan_min_cluster_size,
        "max_medoids": cfg.max_medoids, "min_interactions": cfg.min_interactions, "window_days": cfg.window_days,
        "decay_lambda": cfg.decay_lambda, "embedding_source": settings.embedding.source,
        "trimmed_dim": settings.embedding.trimmed_dim,
        "interaction_weights": settings.interaction_weights.model_dump(),
    }


def run_shard(storage: Storage, settings: Settings, dt: date | str, shard: int, shards: int | None = None,
              algorithm: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Compute one shard's medoids and commit them to the shard's dataset for ``dt``."""
    day = as_date(dt)
    shards = shards or settings.user_medoids.shards
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range 0..{shards - 1}")
    interactions, X = load_interactions(storage, settings, day, shard, shards)
    medoids, stats = compute_medoids(interactions, X, day, settings.user_medoids, algorithm, seed)
    meta = {"stats": stats.__dict__, "params": run_params(settings, algorithm, seed), "shard": shard, "shards": shards}
    storage.write(shard_dataset(shard, shards), day, medoids, metadata=meta)
    return {"shard": shard, "shards": shards, "users": stats.users, "medoids": stats.medoids}


def combine(storage: Storage, settings: Settings, dt: date | str, shards: int | None = None,
            track: bool = True) -> dict[str, Any]:
    """Commit ``user_medoids`` for ``dt`` from all shard outputs (one atomic write) and log the MLflow run."""
    day = as_date(dt)
    shards = shards or settings.user_medoids.shards
    frames, stats, params = [], MedoidStats(), None
    for shard in range(shards):
        name = shard_dataset(shard, shards)
        if not storage.exists(name, day):
            raise MissingPartitionError(f"{name} has no partition for {day}: run user medoid shard {shard} "
                                        f"(`recsys-notify user-medoids --date {day} --shard {shard}`) first")
        meta = storage.manifest(name, day)["metadata"]
        if params is not None and meta["params"] != params:
            raise ValueError(f"shard {shard} of {day} was computed with different parameters than shard 0; "
                             "rerun all shards")
        params = meta["params"]
        stats = stats.add(MedoidStats(**meta["stats"]))
        frames.append(storage.read(name, day))
    medoids = pd.concat(frames, ignore_index=True).sort_values(["user_id", "rank"]).reset_index(drop=True)
    medoids = medoids.astype({"user_id": "int64", "item_id": "int64", "cluster_id": "int64",
                              "cluster_size": "int64", "rank": "int64"})
    result: dict[str, Any] = {"date": day.isoformat(), **{k: v for k, v in stats.__dict__.items() if k != "size_hist"}}
    storage.write("user_medoids", day, medoids, metadata={"stats": stats.__dict__, "params": params, "shards": shards})
    if track:
        result.update(_track(storage, settings, day, medoids, stats, params or {}, shards))
    return result


def refresh(storage: Storage, settings: Settings, dt: date | str, algorithm: str | None = None,
            seed: int | None = None, shards: int | None = None, track: bool = True) -> dict[str, Any]:
    """All shards then combine, in this process (the CLI path; the DAG maps shards over workers)."""
    shards = shards or settings.user_medoids.shards
    for shard in range(shards):
        run_shard(storage, settings, dt, shard, shards, algorithm, seed)
    return combine(storage, settings, dt, shards, track)


def _track(storage: Storage, settings: Settings, day: date, medoids: pd.DataFrame, stats: MedoidStats,
           params: dict[str, Any], shards: int) -> dict[str, Any]:
    """MLflow run: params, counts, cluster-size distribution, synthetic-truth coverage, plot."""
    import mlflow

    from recsys_notify import medoid_eval, tracking

    with tracking.tracked_run(EXPERIMENT, f"user_medoids {day}", params={**params, "shards": shards, "date": day},
                              tags={"dt": day.isoformat()}, settings=settings) as run:
        start = window_start(storage, day, settings.user_medoids.window_days)
        tracking.log_partition_inputs(storage, "events", [start + timedelta(days=i)
                                                          for i in range((day - start).days + 1)])
        per_user = medoids.groupby("user_id").size()
        metrics = {k: float(v) for k, v in stats.__dict__.items() if k != "size_hist"}
        metrics.update({
            "medoids_per_user_mean": float(per_user.mean()) if len(per_user) else 0.0,
            "clusters_per_user_mean": stats.clusters / max(stats.users - stats.users_skipped, 1),
            "noise_fraction": stats.noise_points / max(stats.interactions, 1),
        })
        for lo, hi, count in zip(SIZE_BINS[:-1], SIZE_BINS[1:], stats.size_hist):
            metrics[f"clusters_size_{lo}_{hi - 1 if hi < 10**9 else 'plus'}"] = float(count)
        if storage.dates("truth_users"):
            metrics.update({f"eval_{k}": v for k, v in
                            medoid_eval.evaluate(storage, settings, day, medoids).items()})
        mlflow.log_metrics(metrics)
        mlflow.log_figure(_size_plot(stats), "cluster_sizes.png")
        return {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id,
                **{k: v for k, v in metrics.items() if k.startswith("eval_")}}


def _size_plot(stats: MedoidStats) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in zip(SIZE_BINS[:-2], SIZE_BINS[1:-1])]
    labels.append(f"{SIZE_BINS[-2]}+")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(labels, stats.size_hist)
    ax.set_xlabel("user cluster size (items)")
    ax.set_ylabel("clusters")
    ax.set_title("Per-user cluster sizes")
    fig.tight_layout()
    plt.close(fig)
    return fig
