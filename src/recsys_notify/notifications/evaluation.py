"""Offline evaluation of a day's outbox against the users' next-day positive interactions.

A hit is the chosen item (or any item of its global cluster) among the user's positives of
``dt + 1`` (completion > ``positive_completion`` or liked). The same users get a popular-item and
a random-item baseline through the same filters, so the lift is measured in one run. Users
without any next-day event are left out of hit rates (nothing could have been hit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from recsys_notify.core.config import NotificationSettings
from recsys_notify.core.hashing import GOLDEN, splitmix64
from recsys_notify.notifications.arrays import Arrays, unique_sorted
from recsys_notify.notifications.candidates import CandidateIndex
from recsys_notify.notifications.eligibility import user_hash
from recsys_notify.notifications.select import in_sorted

RANDOM_DRAWS = 32
RANDOM_SALT = 2  # user_hash salts: 0 holdout, 1 template variant


def first_allowed(inputs: Arrays, users: np.ndarray, options: np.ndarray) -> np.ndarray:
    """Per user the first option (row of ``options``, -1 padded) that passes the exclusion filter; -1 if none."""
    k = options.shape[1]
    keys = inputs.keys(np.repeat(users, k), np.maximum(options, 0).ravel())
    ok = ((options >= 0).ravel() & ~in_sorted(keys, inputs.excluded)).reshape(len(users), k)
    has = ok.any(axis=1)
    return np.where(has, options[np.arange(len(users)), ok.argmax(axis=1)], -1)


def baselines(inputs: Arrays, ci: CandidateIndex, users: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Item position per user for the popular and random baselines (same filters as the model).

    Random draws come from a hash of (user id, seed, date), so a user's draws do not depend on which
    other users are evaluated with it (shards give the same figures as one process).
    """
    cat = inputs.catalogue
    slots = ci.slot(inputs.user_lang[users])
    popular = first_allowed(inputs, users, ci.popular[slots])
    h = user_hash(inputs.user_ids[users], seed * 100_003 + inputs.dt.toordinal(), RANDOM_SALT)
    with np.errstate(over="ignore"):
        h = splitmix64(h[:, None] + np.arange(RANDOM_DRAWS, dtype=np.uint64) * GOLDEN)
    draws = np.full((len(users), RANDOM_DRAWS), -1, dtype=np.int64)
    for s in np.unique(slots):
        pool = np.flatnonzero(inputs.allowed & ((cat.lang == s) | (s == ci.any_slot)))
        rows = np.flatnonzero(slots == s)
        if len(pool):
            draws[rows] = pool[(h[rows] % np.uint64(len(pool))).astype(np.int64)]
    return {"popular": popular, "random": first_allowed(inputs, users, draws)}


def hits(inputs: Arrays, users: np.ndarray, items: np.ndarray, clusters: np.ndarray,
         pos_keys: np.ndarray, pos_cluster_keys: np.ndarray) -> tuple[int, int]:
    """Users whose item, and whose item's cluster, is among their next-day positives."""
    ok = items >= 0
    item_hit = ok & in_sorted(inputs.keys(users, np.maximum(items, 0)), pos_keys)
    n_clusters = len(inputs.cluster_ids)
    cluster_hit = ok & in_sorted(users.astype(np.int64) * n_clusters + clusters, pos_cluster_keys)
    return int(item_hit.sum()), int(cluster_hit.sum())


def diversity(cluster_ids: np.ndarray) -> float:
    """Normalised entropy of the chosen clusters (1 = spread evenly, 0 = everyone the same cluster)."""
    _, counts = np.unique(cluster_ids, return_counts=True)
    if len(counts) < 2:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(counts)))


def resolve_clusters(inputs: Arrays, ci: CandidateIndex, items: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Cluster position of each item: as retrieved, else from global_clusters, else the nearest cluster."""
    out = np.where(clusters >= 0, clusters, inputs.item_cluster[items])
    todo = np.flatnonzero(out < 0)
    if len(todo):
        uniq, inv = np.unique(items[todo], return_inverse=True)
        _, idx = ci.index.search(np.ascontiguousarray(inputs.catalogue.vectors[uniq]), 1)
        out[todo] = idx[inv, 0]
    return out


def hit_counts(inputs: Arrays, ci: CandidateIndex, outbox: pd.DataFrame, next_day: pd.DataFrame,
               cfg: NotificationSettings) -> dict[str, int]:
    """Evaluated users and hits of the outbox and both baselines (summed over shards; :func:`rates` divides)."""
    events = next_day
    users = np.searchsorted(inputs.user_ids, outbox["user_id"].to_numpy(np.int64))
    active = np.isin(inputs.user_ids[users], events["user_id"].to_numpy(np.int64))
    positive = events[((events["completion"] > cfg.positive_completion) | events["liked"])
                      & events["item_id"].isin(inputs.catalogue.item_ids) & events["user_id"].isin(inputs.user_ids)]
    p_user = np.searchsorted(inputs.user_ids, positive["user_id"].to_numpy(np.int64))
    p_item = np.searchsorted(inputs.catalogue.item_ids, positive["item_id"].to_numpy(np.int64))
    p_cluster = resolve_clusters(inputs, ci, p_item, np.full(len(p_item), -1))
    pos_keys = unique_sorted(inputs.keys(p_user, p_item))
    pos_cluster_keys = unique_sorted(p_user.astype(np.int64) * len(inputs.cluster_ids) + p_cluster)

    users = users[active]
    chosen = np.searchsorted(inputs.catalogue.item_ids, outbox["item_id"].to_numpy(np.int64)[active])
    chosen_cluster = np.searchsorted(inputs.cluster_ids, outbox["cluster_id"].to_numpy(np.int64)[active])
    counts = {"evaluated_users": len(users)}
    counts["hits_item"], counts["hits_cluster"] = hits(inputs, users, chosen, chosen_cluster, pos_keys,
                                                       pos_cluster_keys)
    for name, items in baselines(inputs, ci, users, cfg.seed).items():
        clusters = resolve_clusters(inputs, ci, np.maximum(items, 0), np.full(len(items), -1))
        counts[f"{name}_hits_item"], counts[f"{name}_hits_cluster"] = hits(inputs, users, items, clusters, pos_keys,
                                                                           pos_cluster_keys)
    return counts


def rates(counts: dict[str, int]) -> dict[str, float]:
    """Hit rates and lifts over the popular baseline from (summed) :func:`hit_counts`."""
    n = counts["evaluated_users"]
    metrics: dict[str, float] = {"evaluated_users": n}
    for prefix in ("", "popular_", "random_"):
        for level in ("item", "cluster"):
            metrics[f"{prefix}hit_rate_{level}"] = counts[f"{prefix}hits_{level}"] / n if n else 0.0
    for level in ("item", "cluster"):
        base = metrics[f"popular_hit_rate_{level}"]
        metrics[f"lift_{level}_vs_popular"] = metrics[f"hit_rate_{level}"] / base if base > 0 else float("nan")
    return metrics


def outbox_metrics(outbox: pd.DataFrame, n_clusters: int, evaluated: bool) -> dict[str, Any]:
    """Metrics of the whole outbox (coverage, diversity, source shares; cluster coverage when evaluated)."""
    sent = outbox[~outbox["holdout"]]
    metrics: dict[str, Any] = {
        "notified_users": len(sent), "holdout_users": int(outbox["holdout"].sum()),
        "coverage": sent["item_id"].nunique() / max(len(sent), 1),
        "diversity": diversity(sent["cluster_id"].to_numpy()),
    }
    for source, count in outbox["source"].value_counts().items():
        metrics[f"share_{source}"] = count / max(len(outbox), 1)
    if evaluated:
        metrics["cluster_coverage"] = outbox["cluster_id"].nunique() / max(n_clusters, 1)
    return metrics


def evaluate(inputs: Arrays, ci: CandidateIndex, outbox: pd.DataFrame, next_day: pd.DataFrame | None,
             cfg: NotificationSettings) -> dict[str, Any]:
    """Metrics of the outbox; hit rates only with ``next_day`` events (user_id, item_id, completion, liked)."""
    evaluated = next_day is not None and not outbox.empty
    metrics = outbox_metrics(outbox, len(inputs.cluster_ids), evaluated)
    if not evaluated:
        return {**metrics, "evaluated_users": 0}
    return {**metrics, **rates(hit_counts(inputs, ci, outbox, next_day, cfg))}
