"""Offline check of user medoids against the synthetic generator's ground truth.

Weighted topic coverage of a user = sum of the user's true topic weights whose topic appears
among the selected items' true topics. Medoids are compared with the obvious baseline: the same
number of slots (``max_medoids``) filled with the user's top items by interaction weight.
Ground truth is read here only, never by production steps.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from recsys_notify.config import Settings
from recsys_notify.interaction_weights import read_window, weigh_interactions
from recsys_notify.storage import Storage


def topic_coverage(selected: pd.DataFrame, truth_users: pd.DataFrame, truth_items: pd.DataFrame) -> pd.Series:
    """Weighted coverage per user of ``selected`` (user_id, item_id) rows, indexed by user_id."""
    topics = selected.merge(truth_items[["item_id", "topic"]], on="item_id", how="left")
    covered = set(zip(topics["user_id"].to_numpy(), topics["topic"].to_numpy()))
    truth = truth_users[truth_users["user_id"].isin(selected["user_id"].unique())]
    exploded = truth[["user_id", "topics", "topic_weights"]].explode(["topics", "topic_weights"])
    hit = np.fromiter(((u, t) in covered for u, t in zip(exploded["user_id"], exploded["topics"])), bool,
                      count=len(exploded))
    weights = exploded["topic_weights"].astype(float)
    return (weights * hit).groupby(exploded["user_id"]).sum() / weights.groupby(exploded["user_id"]).sum()


def top_weight_baseline(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each user's ``k`` heaviest interactions (ties: more events, then more recent)."""
    ordered = interactions.sort_values(["user_id", "weight", "n_events", "last_ts"],
                                       ascending=[True, False, False, False], kind="stable")
    return ordered.groupby("user_id", sort=False).head(k)[["user_id", "item_id"]]


def evaluate(storage: Storage, settings: Settings, dt: date, medoids: pd.DataFrame,
             max_users: int = 20_000) -> dict[str, float]:
    """Mean weighted topic coverage of medoids and of the top-by-weight baseline (same users)."""
    users = np.sort(medoids["user_id"].unique())[:max_users]
    truth_users = storage.read_upto("truth_users", dt)
    truth_items = storage.read_upto("truth_items", dt)
    events = read_window(storage, dt, settings.user_medoids.window_days)
    interactions = weigh_interactions(events[events["user_id"].isin(users)], settings.interaction_weights)
    chosen = medoids[medoids["user_id"].isin(users)]
    ours = topic_coverage(chosen, truth_users, truth_items)
    base = topic_coverage(top_weight_baseline(interactions, settings.user_medoids.max_medoids), truth_users,
                          truth_items)
    return {
        "topic_coverage": float(ours.mean()) if len(ours) else 0.0,
        "baseline_topic_coverage": float(base.reindex(ours.index).mean()) if len(ours) else 0.0,
        "coverage_users": float(len(ours)),
    }
