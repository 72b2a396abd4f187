"""The global_medoids step: cluster every user-medoid item, pick representatives, apply ops overrides.

Resolves the newest user medoids on or before the date, the item vectors and catalogue as of the
date, the previous refresh (for stable ids) and the override history once; validates the override
request before any work; computes with :mod:`recsys_notify.global_medoids.medoids`; writes
``global_clusters``, ``global_medoids``, ``templates`` and the ``overrides`` history as one commit;
logs metrics, plots and a faiss index over the representatives to MLflow.
"""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.core import tracking
from recsys_notify.core.config import Settings, resolve_path
from recsys_notify.core.datasets import (
    GLOBAL_CLUSTERS,
    GLOBAL_MEDOIDS,
    ITEMS,
    OVERRIDES,
    TEMPLATES,
    USER_MEDOIDS,
    ContractError,
)
from recsys_notify.core.embeddings import VECTORS, item_vectors, l2_normalize, vectors_request
from recsys_notify.core.inputs import Inputs, as_of, check_fresh, day, newest, resolve
from recsys_notify.core.step import StepResult, parse_params
from recsys_notify.core.storage import Storage
from recsys_notify.core.templates import load_ops_templates, load_phrases
from recsys_notify.global_medoids import overrides as ovr
from recsys_notify.global_medoids.medoids import (
    apply_replacements,
    kmeans,
    match_ids,
    representatives,
    wanted_replacements,
)
from recsys_notify.global_medoids.params import OverrideParams
from recsys_notify.global_medoids.refresh_policy import measure_drift
from recsys_notify.global_medoids.templates import build_templates

NAME = "global_medoids"


def resolve_inputs(storage: Storage, settings: Settings, dt: date) -> Inputs:
    """Everything one run reads; in drift mode also the user medoids the previous refresh clustered."""
    before = dt - timedelta(days=1)
    requests = {
        "user_medoids": newest(USER_MEDOIDS, dt),
        VECTORS: vectors_request(settings.embedding.source, dt),
        "items": as_of(ITEMS, dt),
        "previous": newest(GLOBAL_MEDOIDS, before, required=False),
        "overrides_before": newest(OVERRIDES, before, required=False),
        "overrides_today": day(OVERRIDES, dt, required=False),
    }
    if settings.global_medoids.trigger == "drift":
        previous = resolve(storage, {"previous": requests["previous"]})["previous"]
        if previous.partitions:
            requests["user_medoids_then"] = newest(USER_MEDOIDS, previous.dates[0], required=False)
    return resolve(storage, requests)


def _drift(inputs: Inputs, settings: Settings, centroids: np.ndarray) -> dict[str, float]:
    """Drift of the run date's user medoids from the previous refresh (see ``refresh_policy.measure_drift``)."""
    columns = ["user_id", "item_id", "importance"]
    now = inputs.frame("user_medoids", columns)
    then = inputs.frame("user_medoids_then", columns) if inputs["user_medoids_then"].partitions else None
    wanted = np.unique(np.concatenate([now["item_id"].to_numpy(np.int64)]
                                      + ([then["item_id"].to_numpy(np.int64)] if then is not None else [])))
    ids, matrix = item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim, item_ids=wanted)
    vectors = dict(zip(ids.tolist(), l2_normalize(matrix)))
    return measure_drift(now, then, vectors, centroids, settings.global_medoids.match_max_distance)


def _skip(settings: Settings, dt: date, inputs: Inputs, prev_day: date | None, drift: dict[str, float]) -> StepResult:
    """Record a refresh the drift trigger skipped: MLflow run and a result that says why (nothing written)."""
    import mlflow

    cfg = settings.global_medoids
    reason = (f"drift below thresholds: uncovered_growth {drift['uncovered_growth']:.4f} <= "
              f"{cfg.drift_max_uncovered}, assignment_churn {drift['assignment_churn']:.4f} <= {cfg.drift_max_churn}; "
              f"notifications keep the refresh of {prev_day}")
    params = {"trigger": cfg.trigger, "drift_max_uncovered": cfg.drift_max_uncovered,
              "drift_max_churn": cfg.drift_max_churn, "match_max_distance": cfg.match_max_distance,
              "previous_refresh": prev_day, "date": dt}
    with tracking.tracked_run(NAME, f"{NAME} {dt} (skipped)", params=params,
                              tags={"dt": dt.isoformat(), "step": NAME, "refresh": "skipped"},
                              settings=settings) as active:
        tracking.log_lineage(inputs)
        mlflow.log_metrics({**drift, "refreshed": 0.0})
        mlflow.set_tag("skip_reason", reason)
    summary = {"refreshed": False, "skipped": True, "skip_reason": reason, "previous_refresh": str(prev_day),
               "user_medoids_dt": inputs["user_medoids"].dates[0].isoformat(), **drift}
    return StepResult(NAME, dt, {}, summary, inputs.summary(), **tracking.run_ids(active))


def _optional(inputs: Inputs, role: str) -> pd.DataFrame | None:
    return inputs.frame(role) if inputs[role].partitions else None


def _previous(inputs: Inputs) -> tuple[date | None, np.ndarray, np.ndarray]:
    """Cluster ids and centroids of the newest refresh before the run date."""
    if not inputs["previous"].partitions:
        return None, np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    prev = inputs.frame("previous", ["cluster_id", "language", "centroid"])
    prev = prev[prev["language"] == "*"].sort_values("cluster_id")
    return (inputs["previous"].dates[0], prev["cluster_id"].to_numpy(np.int64),
            np.stack(prev["centroid"].to_numpy()).astype(np.float32))


def run(storage: Storage, settings: Settings, dt: date, params: dict[str, Any] | None = None) -> StepResult:
    """Recompute global medoids for ``dt``, then re-materialise later refreshes the request covers.

    Invalid override params fail before anything is written. An override requested for ``dt`` also
    covers refreshes that already ran for later dates: each is recomputed from its own inputs,
    oldest first, so its representatives (while the override is in force) and its audit history
    include the request; the refresh is deterministic, so nothing else in it changes.
    """
    settings, request = parse_params(settings, NAME, params, OverrideParams)
    assert isinstance(request, OverrideParams)
    result = _refresh(storage, settings, dt, request)
    repaired = []
    for later in covered_later_dates(storage.dates(GLOBAL_MEDOIDS.name), dt, request):
        _refresh(storage, settings, later, OverrideParams(run_id=f"{request.run_id}:repair"), repair=True)
        repaired.append(later.isoformat())
    result.summary["repaired_dates"] = repaired
    return result


def covered_later_dates(refreshed: list[date], dt: date, request: OverrideParams) -> list[date]:
    """Already-refreshed dates after ``dt`` that ``request`` changes (ascending; none for a plain refresh).

    Every later one, also past ``expires``: each refresh's ``overrides`` snapshot is the history the
    next refresh builds on, so the audit trail must carry the request forward.
    """
    return [] if request.empty else [d for d in sorted(refreshed) if d > dt]


def _refresh(storage: Storage, settings: Settings, dt: date, request: OverrideParams,
             repair: bool = False) -> StepResult:
    """One refresh of ``dt`` with ``request`` applied (validated before anything is written).

    A ``repair`` re-materialises a refresh that exists, so the drift trigger never skips it.
    """
    cfg = settings.global_medoids
    ops_templates = load_ops_templates(resolve_path(cfg.templates_path))
    phrases = load_phrases(resolve_path(cfg.phrases_path))
    inputs = resolve_inputs(storage, settings, dt)
    check_fresh(inputs, NAME, dt, cfg.max_input_age_days, "global_medoids.max_input_age_days")
    medoids = inputs.frame("user_medoids", ["user_id", "item_id"])
    um_day = inputs["user_medoids"].dates[0]
    if medoids.empty:
        raise ContractError(f"user_medoids for {um_day} is empty: nothing to cluster for {dt}")
    catalog = inputs.dimension("items", ["item_id", "language", "caption", "creator_id"])
    hist = ovr.history(_optional(inputs, "overrides_before"), _optional(inputs, "overrides_today"), dt,
                       request.run_id)
    ovr.validate(request, dt, catalog[["item_id", "language"]], ovr.active(hist, dt))
    prev_day, prev_ids, prev_centroids = _previous(inputs)
    drift: dict[str, float] = {}
    if cfg.trigger == "drift" and prev_day is not None and not repair:
        drift = _drift(inputs, settings, prev_centroids)
        calm = drift["uncovered_growth"] <= cfg.drift_max_uncovered and drift["assignment_churn"] <= cfg.drift_max_churn
        if calm and request.empty:  # an ops request always refreshes: its overrides must ship
            return _skip(settings, dt, inputs, prev_day, drift)

    item_ids, matrix = item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim,
                                    item_ids=np.unique(medoids["item_id"].to_numpy(np.int64)))
    X = l2_normalize(matrix)
    centroids, assign, distance = kmeans(X, cfg.k, cfg.niter, cfg.seed)
    sizes = np.bincount(assign, minlength=len(centroids))
    stable, quality = match_ids(centroids, sizes, prev_ids, prev_centroids, cfg.match_max_distance)
    ovr.validate_clusters(request, set(stable.tolist()))

    new_hist = ovr.next_history(hist, request, dt)
    in_force = ovr.active(new_hist, dt)
    blocked_ids = set(in_force.loc[in_force["action"] == "block", "item_id"].astype("int64"))
    by_id = catalog.set_index("item_id")
    cluster_of_item = stable[assign]
    reps = representatives(cluster_of_item, X, item_ids, by_id.loc[item_ids, "language"].to_numpy(),
                           np.isin(item_ids, list(blocked_ids)))
    reps["vector"] = list(X[reps.pop("row").to_numpy()])
    reps["source"], reps["override_id"] = "kmeans", None
    wanted, stale = wanted_replacements(reps, in_force, blocked_ids)
    if len(wanted):
        ids, vecs = item_vectors(inputs, settings.embedding.source, settings.embedding.trimmed_dim,
                                 item_ids=np.unique(wanted["item_id"].astype("int64").to_numpy()))
        reps = apply_replacements(reps, wanted, dict(zip(ids.tolist(), l2_normalize(vecs))))
    centroid_of = dict(zip(stable.tolist(), centroids))
    reps["centroid"] = [centroid_of[c] for c in reps["cluster_id"]]
    reps = reps.drop(columns=["score"]).astype({"cluster_id": "int64", "item_id": "int64", "cluster_size": "int64",
                                                "language_items": "int64"})

    clusters = pd.DataFrame({"item_id": item_ids, "cluster_id": cluster_of_item, "distance": distance})
    templates = build_templates(clusters["cluster_id"].to_numpy(), by_id.loc[item_ids, "caption"].astype(str).tolist(),
                                by_id.loc[item_ids, "language"].astype(str).tolist(), ops_templates, phrases,
                                cfg.template_keywords, cfg.template_variants)
    meta = {"user_medoids_dt": um_day.isoformat(), "previous_refresh": str(prev_day), "match": quality}
    summary: dict[str, Any] = {
        "user_medoids_dt": um_day.isoformat(), "users": int(medoids["user_id"].nunique()), "items": len(item_ids),
        "clusters": len(centroids), "representatives": len(reps), "overrides_applied": len(wanted),
        "overrides_stale": stale, "overrides_active": len(in_force), "overrides_new": len(new_hist) - len(hist),
        **quality, **({"refreshed": True, **drift} if cfg.trigger == "drift" else {}),
    }
    params_logged = {"k": cfg.k, "k_effective": len(sizes), "niter": cfg.niter, "seed": cfg.seed,
                     "schedule": cfg.schedule, "trigger": cfg.trigger, "embedding_source": settings.embedding.source,
                     "trimmed_dim": settings.embedding.trimmed_dim, "match_max_distance": cfg.match_max_distance,
                     "user_medoids_dt": um_day, "previous_refresh": prev_day, "date": dt}
    with tracking.tracked_run(NAME, f"{NAME} {dt}", params=params_logged,
                              tags={"dt": dt.isoformat(), "step": NAME, "refresh": "refreshed"},
                              settings=settings) as active:
        written = storage.write_many(dt, {GLOBAL_CLUSTERS.name: clusters, GLOBAL_MEDOIDS.name: reps,
                                          TEMPLATES.name: templates, OVERRIDES.name: new_hist},
                                     meta, {OVERRIDES.name: {"run_id": request.run_id}})
        tracking.log_lineage(inputs)
        metrics = _metrics(summary, sizes, len(medoids), reps, templates, new_hist, dt)
        silhouette = _silhouette(X, cluster_of_item, cfg.silhouette_sample, cfg.seed)
        if silhouette is not None:
            metrics["silhouette_cosine"] = summary["silhouette_cosine"] = silhouette
        _log_artifacts(metrics, sizes, reps, templates)
    return StepResult(NAME, dt, {k: w.rows for k, w in written.items()}, summary, inputs.summary(),
                      **tracking.run_ids(active))


def _metrics(summary: dict[str, Any], sizes: np.ndarray, medoid_rows: int, reps: pd.DataFrame,
             templates: pd.DataFrame, hist: pd.DataFrame, dt: date) -> dict[str, float]:
    metrics = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics.update({"cluster_size_min": float(sizes.min()), "cluster_size_median": float(np.median(sizes)),
                    "cluster_size_p90": float(np.percentile(sizes, 90)), "cluster_size_max": float(sizes.max()),
                    "medoid_rows": float(medoid_rows), "languages": float(reps["language"].nunique() - 1),
                    "templates_ops": float((templates["source"] == "ops").sum()),
                    "templates_auto": float((templates["source"] == "auto").sum()),
                    "overrides_expiring_7d": float(ovr.pending_expiry(hist, dt))})
    return metrics


def _silhouette(X: np.ndarray, labels: np.ndarray, sample: int, seed: int) -> float | None:
    """Cosine silhouette on a seeded sample (None when there is only one cluster or one item per cluster)."""
    from sklearn.metrics import silhouette_score

    if not 1 < len(np.unique(labels)) < len(labels):
        return None
    rows = np.random.default_rng(seed).choice(len(labels), min(sample, len(labels)), replace=False)
    if len(np.unique(labels[rows])) < 2:
        return None
    return float(silhouette_score(X[rows], labels[rows], metric="cosine"))


def _log_artifacts(metrics: dict[str, float], sizes: np.ndarray, reps: pd.DataFrame, templates: pd.DataFrame) -> None:
    import faiss
    import mlflow

    mlflow.log_metrics(metrics)
    overall = reps[reps["language"] == "*"]
    with tracking.logged_figure("cluster_sizes.png", figsize=(7, 3.5)) as (_, ax):
        ax.hist(sizes, bins=min(50, max(5, len(sizes) // 5)))
        ax.set(xlabel="items per global cluster", ylabel="clusters", title="Global cluster sizes")
    _projection_plot(overall)
    vectors = np.stack(overall["vector"].to_numpy()).astype(np.float32)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, overall["cluster_id"].to_numpy(np.int64))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "global_medoids.faiss"
        faiss.write_index(index, str(path))
        mlflow.log_artifact(str(path), "index")
        templates.drop(columns=["keywords"]).to_csv(Path(tmp) / "templates.csv", index=False)
        mlflow.log_artifact(str(Path(tmp) / "templates.csv"))


def _projection_plot(overall: pd.DataFrame) -> None:
    """2-D PCA of the representatives ("*" rows), sized by cluster size; ops overrides in red, drawn on top."""
    vectors = np.stack(overall["vector"].to_numpy()).astype(np.float64)
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    y = xy[:, 1] if xy.shape[1] > 1 else np.zeros(len(xy))
    size = 8 + 4 * np.sqrt(overall["cluster_size"].to_numpy())
    override = overall["source"].to_numpy() == "override"
    with tracking.logged_figure("global_medoids_2d.png", figsize=(6, 6)) as (_, ax):
        draw_projection(ax, xy[:, 0], y, size, override)


def draw_projection(ax: Any, x: np.ndarray, y: np.ndarray, size: np.ndarray, override: np.ndarray) -> None:
    """KMeans representatives in blue, then ops overrides in red above every blue point (zorder and order)."""
    ax.scatter(x[~override], y[~override], s=size[~override], c="tab:blue", alpha=0.6, zorder=2, label="kmeans")
    if override.any():
        ax.scatter(x[override], y[override], s=size[override] * 1.5, c="tab:red", edgecolors="black", zorder=3,
                   label="ops override")
    ax.legend(loc="best")
    ax.set_title("Global medoids (PCA of representatives)")
