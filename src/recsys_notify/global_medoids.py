"""Global medoid refresh: cluster every user-medoid item, pick representatives, keep ids stable.

1. Unique items of the newest ``user_medoids`` partition -> trimmed unit vectors -> spherical
   faiss KMeans (``k`` from settings, capped by the item count).
2. Cluster ids are matched to the previous refresh by Hungarian assignment on centroid cosine
   distance, so templates and overrides keep meaning; a match farther than
   ``match_max_distance`` gets a fresh id (ids are never reused).
3. Representatives: per cluster the exact cosine 1-medoid (``"*"``), and per language present
   in the cluster the item of that language with the least total distance to the whole cluster.
   Blocked items are never representatives; ops replacements in force override the choice.
4. Writes ``global_clusters``, ``global_medoids``, ``templates`` and the ``overrides`` history for
   the date, then logs an MLflow run with metrics, plots and a faiss index over representatives.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify import overrides as ovr
from recsys_notify import templates as tpl
from recsys_notify.clustering import cosine_medoid_scores
from recsys_notify.config import Settings
from recsys_notify.embeddings import item_vectors, l2_normalize
from recsys_notify.storage import MissingPartitionError, Storage, as_date

EXPERIMENT = "global_medoids"
FAISS_MIN_POINTS_PER_CENTROID = 39  # faiss's default: below it, it warns that clusters are underdetermined
log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What one refresh reads: the medoid items with vectors and the item catalog."""

    user_medoids_dt: date
    users: int
    medoid_rows: int
    item_ids: np.ndarray  # sorted unique user-medoid items
    X: np.ndarray  # unit vectors aligned with item_ids
    catalog: pd.DataFrame  # item_id, language, caption, creator_id of every item known on the date


def load_inputs(storage: Storage, settings: Settings, day: date) -> Inputs:
    um_day = storage.latest_on_or_before("user_medoids", day)
    medoids = storage.read("user_medoids", um_day, columns=["user_id", "item_id"])
    if medoids.empty:
        raise MissingPartitionError(f"user_medoids for {um_day} is empty: nothing to cluster for {day}")
    items = np.unique(medoids["item_id"].to_numpy(np.int64))
    ids, matrix = item_vectors(storage, day, settings.embedding.source, settings.embedding.trimmed_dim, item_ids=items)
    catalog = storage.read_upto("items", day, columns=["item_id", "language", "caption", "creator_id"])
    catalog = catalog.drop_duplicates("item_id", keep="last")  # a re-ingested item: newest row wins
    return Inputs(um_day, int(medoids["user_id"].nunique()), len(medoids), ids, l2_normalize(matrix), catalog)


def kmeans(X: np.ndarray, k: int, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical faiss KMeans; returns unit centroids of non-empty clusters, assignment, cosine distance."""
    import faiss

    k = min(k, len(X))
    if len(X) < k * FAISS_MIN_POINTS_PER_CENTROID:
        # faiss would print this to stderr on every run (an ERROR line in task logs); one log record instead
        log.warning("KMeans on %d vectors into k=%d clusters: fewer than %d per cluster, so clusters are noisy; "
                    "lower global_medoids.k for this much data", len(X), k, FAISS_MIN_POINTS_PER_CENTROID)
    km = faiss.Kmeans(X.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1)
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


def _previous(storage: Storage, day: date) -> tuple[date | None, np.ndarray, np.ndarray]:
    """Cluster ids and centroids of the newest refresh strictly before ``day``."""
    days = [d for d in storage.dates("global_medoids") if d < day]
    if not days:
        return None, np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    prev = storage.read("global_medoids", days[-1], columns=["cluster_id", "language", "centroid"])
    prev = prev[prev["language"] == "*"].sort_values("cluster_id")
    return days[-1], prev["cluster_id"].to_numpy(np.int64), np.stack(prev["centroid"].to_numpy()).astype(np.float32)


def check_request(storage: Storage, settings: Settings, dt: date | str, request: ovr.OverrideRequest,
                  run_id: str | None = None) -> dict[str, Any]:
    """Validate override params against the catalog, overrides in force and the previous refresh's ids.

    Called by the DAG's first task so bad params fail before any work; :func:`refresh` re-checks.
    """
    day = as_date(dt)
    catalog = storage.read_upto("items", day, columns=["item_id", "language"])
    current = ovr.active(ovr.history(storage, day, run_id), day)
    ovr.validate(request, day, catalog, current)
    prev_day, prev_ids, _ = _previous(storage, day)
    if prev_day is not None and request.replace:
        ovr.validate_clusters(request, set(prev_ids.tolist()))
    tpl.load_ops_templates(tpl.resolve_path(settings.global_medoids.templates_path))
    return {"replace": len(request.replace), "block": len(request.block), "revoke": len(request.revoke),
            "active_overrides": len(current)}


def refresh(storage: Storage, settings: Settings, dt: date | str, request: ovr.OverrideRequest | None = None,
            run_id: str = "cli", track: bool = True) -> dict[str, Any]:
    """Recompute global medoids for ``dt``; invalid override params fail before anything is written."""
    day = as_date(dt)
    cfg = settings.global_medoids
    request = request or ovr.OverrideRequest()
    ops_templates = tpl.load_ops_templates(tpl.resolve_path(cfg.templates_path))
    inputs = load_inputs(storage, settings, day)
    hist = ovr.history(storage, day, run_id)
    current = ovr.active(hist, day)
    ovr.validate(request, day, inputs.catalog[["item_id", "language"]], current)

    centroids, assign, distance = kmeans(inputs.X, cfg.k, cfg.niter, cfg.seed)
    sizes = np.bincount(assign, minlength=len(centroids))
    prev_day, prev_ids, prev_centroids = _previous(storage, day)
    stable, quality = match_ids(centroids, sizes, prev_ids, prev_centroids, cfg.match_max_distance)
    ovr.validate_clusters(request, set(stable.tolist()))

    new_hist = ovr.next_history(hist, request, day, run_id)
    in_force = ovr.active(new_hist, day)
    blocked_ids = set(in_force.loc[in_force["action"] == "block", "item_id"].astype("int64"))
    catalog = inputs.catalog.set_index("item_id")
    cluster_of_item = stable[assign]
    reps = representatives(cluster_of_item, inputs.X, inputs.item_ids,
                           catalog.loc[inputs.item_ids, "language"].to_numpy(),
                           np.isin(inputs.item_ids, list(blocked_ids)))
    reps["vector"] = list(inputs.X[reps.pop("row").to_numpy()])
    reps["source"], reps["override_id"] = "kmeans", None
    reps, applied, stale = _apply_replacements(storage, settings, day, reps, in_force, blocked_ids, catalog)
    centroid_of = dict(zip(stable.tolist(), centroids))
    reps["centroid"] = [centroid_of[c] for c in reps["cluster_id"]]
    reps = reps.drop(columns=["score"]).astype({"cluster_id": "int64", "item_id": "int64", "cluster_size": "int64",
                                                "language_items": "int64"})

    clusters = pd.DataFrame({"item_id": inputs.item_ids, "cluster_id": cluster_of_item, "distance": distance})
    templates = tpl.build_templates(clusters["cluster_id"].to_numpy(),
                                    catalog.loc[inputs.item_ids, "caption"].astype(str).tolist(), ops_templates,
                                    cfg.template_keywords, cfg.template_variants)
    meta = {"user_medoids_dt": inputs.user_medoids_dt.isoformat(), "previous_refresh": str(prev_day),
            "match": quality}
    storage.write("global_clusters", day, clusters, metadata=meta)
    storage.write("global_medoids", day, reps, metadata=meta)
    storage.write("templates", day, templates, metadata=meta)
    storage.write(ovr.DATASET, day, new_hist, metadata={"run_id": run_id})

    result: dict[str, Any] = {
        "date": day.isoformat(), "user_medoids_dt": inputs.user_medoids_dt.isoformat(), "users": inputs.users,
        "items": len(inputs.item_ids), "clusters": len(centroids), "representatives": len(reps),
        "overrides_applied": applied, "overrides_stale": stale, "overrides_active": len(in_force),
        "overrides_new": len(new_hist) - len(hist), **quality,
    }
    if track:
        result.update(_track(storage, settings, day, inputs, reps, clusters, sizes, templates, result, prev_day))
    return result


def _apply_replacements(storage: Storage, settings: Settings, day: date, reps: pd.DataFrame, in_force: pd.DataFrame,
                        blocked: set[int], catalog: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Put ops-chosen items in place of computed representatives (newest override wins)."""
    wanted = in_force[in_force["action"] == "replace"].sort_values(["created_dt", "override_id"])
    wanted = wanted.drop_duplicates(["cluster_id", "language"], keep="last")
    wanted = wanted[~wanted["item_id"].astype("int64").isin(blocked)]
    live = set(reps["cluster_id"])
    stale = int((~wanted["cluster_id"].isin(live)).sum())
    wanted = wanted[wanted["cluster_id"].isin(live)]
    if wanted.empty:
        return reps, 0, stale
    item_ids = wanted["item_id"].astype("int64").to_numpy()
    ids, matrix = item_vectors(storage, day, settings.embedding.source, settings.embedding.trimmed_dim,
                               item_ids=np.unique(item_ids))
    vectors = dict(zip(ids.tolist(), l2_normalize(matrix)))
    records = {(r["cluster_id"], r["language"]): r for r in reps.to_dict("records")}
    sizes = reps.groupby("cluster_id")["cluster_size"].first()
    for row in wanted.itertuples():
        key = (int(row.cluster_id), str(row.language))
        base = records.get(key, {"cluster_id": key[0], "language": key[1], "cluster_size": int(sizes[key[0]]),
                                 "language_items": 0})
        records[key] = {**base, "item_id": int(row.item_id), "vector": vectors[int(row.item_id)], "score": np.nan,
                        "source": "override", "override_id": row.override_id}
    out = pd.DataFrame(list(records.values()))
    return out.sort_values(["cluster_id", "language"]).reset_index(drop=True), len(wanted), stale


def _track(storage: Storage, settings: Settings, day: date, inputs: Inputs, reps: pd.DataFrame,
           clusters: pd.DataFrame, sizes: np.ndarray, templates: pd.DataFrame, result: dict[str, Any],
           prev_day: date | None) -> dict[str, Any]:
    import faiss
    import mlflow
    from sklearn.metrics import silhouette_score

    from recsys_notify import tracking

    cfg = settings.global_medoids
    params = {"k": cfg.k, "k_effective": len(sizes), "niter": cfg.niter, "seed": cfg.seed, "schedule": cfg.schedule,
              "embedding_source": settings.embedding.source, "trimmed_dim": settings.embedding.trimmed_dim,
              "match_max_distance": cfg.match_max_distance, "user_medoids_dt": inputs.user_medoids_dt,
              "previous_refresh": prev_day, "date": day}
    with tracking.tracked_run(EXPERIMENT, f"global_medoids {day}", params=params, tags={"dt": day.isoformat()},
                              settings=settings) as run:
        tracking.log_partition_inputs(storage, "user_medoids", inputs.user_medoids_dt)
        metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics.update({"cluster_size_min": float(sizes.min()), "cluster_size_median": float(np.median(sizes)),
                        "cluster_size_p90": float(np.percentile(sizes, 90)), "cluster_size_max": float(sizes.max()),
                        "medoid_rows": float(inputs.medoid_rows),
                        "languages": float(reps["language"].nunique() - 1),
                        "templates_ops": float((templates["source"] == "ops").sum()),
                        "templates_auto": float((templates["source"] == "auto").sum()),
                        "overrides_expiring_7d": float(ovr.pending_expiry(storage.read(ovr.DATASET, day), day))})
        labels = clusters["cluster_id"].to_numpy()
        if 1 < len(np.unique(labels)) < len(labels):
            rng = np.random.default_rng(cfg.seed)
            sample = rng.choice(len(labels), min(cfg.silhouette_sample, len(labels)), replace=False)
            if len(np.unique(labels[sample])) > 1:
                metrics["silhouette_cosine"] = float(silhouette_score(inputs.X[sample], labels[sample], metric="cosine"))
        mlflow.log_metrics(metrics)
        overall = reps[reps["language"] == "*"]
        mlflow.log_figure(_size_plot(sizes), "cluster_sizes.png")
        mlflow.log_figure(_projection_plot(overall), "global_medoids_2d.png")
        vectors = np.stack(overall["vector"].to_numpy()).astype(np.float32)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        index.add_with_ids(vectors, overall["cluster_id"].to_numpy(np.int64))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "global_medoids.faiss"
            faiss.write_index(index, str(path))
            mlflow.log_artifact(str(path), "index")
            templates.drop(columns=["keywords"]).to_csv(Path(tmp) / "templates.csv", index=False)
            mlflow.log_artifact(str(Path(tmp) / "templates.csv"))
        return {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id,
                **({"silhouette_cosine": metrics["silhouette_cosine"]} if "silhouette_cosine" in metrics else {})}


def _size_plot(sizes: np.ndarray) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(sizes, bins=min(50, max(5, len(sizes) // 5)))
    ax.set_xlabel("items per global cluster")
    ax.set_ylabel("clusters")
    ax.set_title("Global cluster sizes")
    fig.tight_layout()
    plt.close(fig)
    return fig


def _projection_plot(overall: pd.DataFrame) -> Any:
    """2-D PCA of the representatives ("*" rows), sized by cluster size; overrides in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vectors = np.stack(overall["vector"].to_numpy()).astype(np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(6, 6))
    colours = np.where(overall["source"].to_numpy() == "override", "tab:red", "tab:blue")
    ax.scatter(xy[:, 0], xy[:, 1] if xy.shape[1] > 1 else np.zeros(len(xy)), s=8 + 4 * np.sqrt(
        overall["cluster_size"].to_numpy()), c=colours, alpha=0.6)
    ax.set_title("Global medoids (PCA of representatives; red = ops override)")
    fig.tight_layout()
    plt.close(fig)
    return fig
