"""Offline check of user medoids against the synthetic generator's ground truth.

Weighted topic coverage of a user = sum of the user's true topic weights whose topic appears
among the selected items' true topics. Medoids are compared with the obvious baseline: the same
number of slots (``max_medoids``) filled with the user's top items by interaction weight.
The step calls :func:`evaluate` only when the data root holds the generator's ground truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def topic_coverage(selected: pd.DataFrame, truth_users: pd.DataFrame, truth_items: pd.DataFrame) -> pd.Series:
    """Weighted coverage per user of ``selected`` (user_id, item_id) rows, indexed by user_id."""
    topics = selected.merge(truth_items[["item_id", "topic"]], on="item_id", how="left")
    covered = pd.MultiIndex.from_arrays([topics["user_id"].to_numpy(np.int64), topics["topic"].to_numpy(np.float64)])
    truth = truth_users[truth_users["user_id"].isin(selected["user_id"].unique())]
    exploded = truth[["user_id", "topics"]].explode("topics")  # one column at a time: the vectorised explode
    topic = exploded["topics"].to_numpy(np.float64)
    hit = pd.MultiIndex.from_arrays([exploded["user_id"].to_numpy(np.int64), topic]).isin(covered) & ~np.isnan(topic)
    weights = truth["topic_weights"].explode().astype(float)
    return (weights * hit).groupby(exploded["user_id"]).sum() / weights.groupby(exploded["user_id"]).sum()


def top_weight_baseline(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each user's ``k`` heaviest interactions (ties: more events, then more recent)."""
    ordered = interactions.sort_values(["user_id", "weight", "n_events", "last_ts"],
                                       ascending=[True, False, False, False], kind="stable")
    return ordered.groupby("user_id", sort=False).head(k)[["user_id", "item_id"]]


def evaluate(medoids: pd.DataFrame, interactions: pd.DataFrame, truth_users: pd.DataFrame,
             truth_items: pd.DataFrame, max_medoids: int) -> dict[str, float]:
    """Mean weighted topic coverage of medoids and of the top-by-weight baseline (same users).

    ``interactions`` are the weighted interactions of the users evaluated (the baseline's pool).
    """
    users = interactions["user_id"].unique()
    ours = topic_coverage(medoids[medoids["user_id"].isin(users)], truth_users, truth_items)
    base = topic_coverage(top_weight_baseline(interactions, max_medoids), truth_users, truth_items)
    return {
        "topic_coverage": float(ours.mean()) if len(ours) else 0.0,
        "baseline_topic_coverage": float(base.reindex(ours.index).mean()) if len(ours) else 0.0,
        "coverage_users": float(len(ours)),
    }
