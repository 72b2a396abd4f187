"""When is a new global clustering worth it: in-memory refreshes, drift measures, the policy choice (pure).

* :func:`refresh` is one global-medoid refresh without ops overrides (KMeans, stable ids against the
  previous set, representatives, automatic templates) held in memory: the replay study calls it on
  the user medoids already in storage and never writes a ``global_medoids`` partition.
* :func:`measure_drift` is what the drift trigger compares with its thresholds: how much the share
  of user-medoid items farther than ``match_max_distance`` from every current centroid (interests the
  clustering does not cover) grew since the refresh's own user medoids, and the assignment churn
  (how much of users' medoid importance moved between clusters since then: mean total-variation
  distance per user).
* :func:`recommend` picks a policy from the study's table by the one-standard-error rule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from recsys_notify.core.config import GlobalMedoidSettings
from recsys_notify.core.templates import COLUMNS as TEMPLATE_COLUMNS
from recsys_notify.core.templates import Phrases
from recsys_notify.global_medoids.medoids import kmeans, match_ids, representatives
from recsys_notify.global_medoids.templates import build_templates


@dataclass
class GlobalSet:
    """One refresh in memory: the rows notifications read from ``global_medoids/clusters/templates``."""

    dt: date
    cluster_ids: np.ndarray  # stable id of each centroid row
    centroids: np.ndarray  # unit vectors, one row per cluster
    clusters: pd.DataFrame  # item_id, cluster_id, distance
    medoids: pd.DataFrame  # cluster_id, language, item_id, vector, source
    templates: pd.DataFrame
    seconds: float  # CPU seconds of the refresh, all threads (KMeans, ids, representatives, templates)


def refresh_dates(start: date, end: date, every: int) -> list[date]:
    """The days a policy "refresh every ``every`` days" refreshes on: ``start`` and every ``every``-th day after."""
    return [start + timedelta(days=i) for i in range(0, (end - start).days + 1, every)]


def refresh(dt: date, item_ids: np.ndarray, X: np.ndarray, languages: np.ndarray, captions: list[str],
            cfg: GlobalMedoidSettings, phrases: Mapping[str, Phrases], previous: GlobalSet | None) -> GlobalSet:
    """Cluster the unit vectors ``X`` of the user-medoid items ``item_ids``; ids stay stable against ``previous``."""
    began = time.process_time()  # CPU time: comparable between policies on a shared, loaded machine
    centroids, assign, distance = kmeans(X, cfg.k, cfg.niter, cfg.seed)
    sizes = np.bincount(assign, minlength=len(centroids))
    prev_ids = previous.cluster_ids if previous else np.zeros(0, np.int64)
    prev_centroids = previous.centroids if previous else np.zeros((0, X.shape[1]), np.float32)
    ids, _ = match_ids(centroids, sizes, prev_ids, prev_centroids, cfg.match_max_distance)
    cluster_of = ids[assign]
    reps = representatives(cluster_of, X, item_ids, languages, np.zeros(len(item_ids), bool))
    reps["vector"] = list(X[reps.pop("row").to_numpy()])
    reps["source"] = "kmeans"
    templates = build_templates(cluster_of, captions, languages, pd.DataFrame(columns=TEMPLATE_COLUMNS), phrases,
                                cfg.template_keywords, cfg.template_variants)
    clusters = pd.DataFrame({"item_id": item_ids, "cluster_id": cluster_of, "distance": distance})
    order = np.argsort(ids)
    return GlobalSet(dt, ids[order], centroids[order], clusters, reps.drop(columns=["score"]), templates,
                     time.process_time() - began)


def nearest(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of the nearest centroid and the cosine distance to it, per unit vector."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    sims, rows = index.search(np.ascontiguousarray(X, dtype=np.float32), 1)
    return rows[:, 0].astype(np.int64), (1.0 - sims[:, 0]).astype(np.float64)


def cluster_shares(medoids: pd.DataFrame, item_cluster: pd.Series) -> pd.Series:
    """Per (user, cluster row) the share of the user's medoid importance in that cluster."""
    frame = medoids.assign(cluster=item_cluster.reindex(medoids["item_id"]).to_numpy())
    weight = frame.groupby(["user_id", "cluster"])["importance"].sum()
    return weight / weight.groupby(level="user_id").transform("sum")


def measure_drift(now: pd.DataFrame, then: pd.DataFrame | None, vectors: dict[int, np.ndarray],
                  centroids: np.ndarray, max_distance: float) -> dict[str, float]:
    """How far user medoids moved from a refresh's centroids.

    ``now`` / ``then``: user medoids (user_id, item_id, importance) of the run date and of the
    refresh's date (None: churn is not measured and the growth is the whole uncovered share);
    ``vectors``: unit vector per item id. With few clusters some items are always far from every
    centroid, so the trigger looks at the growth of that share, not at its level.
    """
    items = np.unique(np.concatenate([now["item_id"].to_numpy(np.int64)]
                                     + ([then["item_id"].to_numpy(np.int64)] if then is not None else [])))
    rows, distance = nearest(np.stack([vectors[int(i)] for i in items]), centroids)
    item_cluster = pd.Series(rows, index=items)
    def uncovered(frame: pd.DataFrame) -> float:
        mask = np.isin(items, frame["item_id"].to_numpy(np.int64))
        return float((distance[mask] > max_distance).mean()) if mask.any() else 0.0

    out = {"uncovered_share": uncovered(now), "uncovered_at_refresh": 0.0, "assignment_churn": 0.0,
           "users_compared": 0.0}
    out["uncovered_growth"] = out["uncovered_share"]
    if then is not None:
        out["uncovered_at_refresh"] = uncovered(then)
        out["uncovered_growth"] = max(0.0, out["uncovered_share"] - out["uncovered_at_refresh"])
        a, b = cluster_shares(then, item_cluster), cluster_shares(now, item_cluster)
        common = a.index.get_level_values("user_id").unique().intersection(b.index.get_level_values("user_id"))
        if len(common):
            a = a[a.index.get_level_values("user_id").isin(common)]
            b = b[b.index.get_level_values("user_id").isin(common)]
            moved = a.sub(b, fill_value=0.0).abs().groupby(level="user_id").sum() / 2  # total variation per user
            out["assignment_churn"] = float(moved.mean())
            out["users_compared"] = float(len(common))
    return out


def cluster_change(before: pd.Series, after: pd.Series) -> float:
    """Share of users notified on both days (user_id -> chosen cluster id) whose cluster changed."""
    common = before.index.intersection(after.index)
    return float((before[common] != after[common]).mean()) if len(common) else 0.0


def standard_error(rate: float, n: int) -> float:
    return math.sqrt(rate * (1 - rate) / n) if n else 0.0


def recommend(table: pd.DataFrame) -> tuple[int, str]:
    """The least frequent policy whose item hit rate is within one standard error of the best one.

    ``table`` has a row per policy with ``every``, ``hit_rate_item`` and ``evaluated``; returns the
    chosen ``every`` and a one-line reason. Differences smaller than the noise do not justify the
    extra refreshes, so among policies that cannot be told apart from the best the cheapest wins.
    """
    best = table.loc[table["hit_rate_item"].idxmax()]
    se = standard_error(float(best["hit_rate_item"]), int(best["evaluated"]))
    ok = table[table["hit_rate_item"] >= best["hit_rate_item"] - se]
    pick = ok.loc[ok["every"].idxmax()]
    if pick["every"] == best["every"]:
        return int(pick["every"]), (f"refresh every {int(pick['every'])} day(s): best item hit rate "
                                    f"{best['hit_rate_item']:.4f}; no less frequent policy is within one standard "
                                    f"error ({se:.4f})")
    return int(pick["every"]), (f"refresh every {int(pick['every'])} day(s): item hit rate {pick['hit_rate_item']:.4f}"
                                f" vs best {best['hit_rate_item']:.4f} (every {int(best['every'])} day(s)), within one "
                                f"standard error ({se:.4f}), with {int(pick['refreshes'])} refresh(es) instead of "
                                f"{int(best['refreshes'])}")
