"""Ranking: the two-tower champion when one is registered, else a transparent score.

Transparent score = affinity x log(2 + recent positive engagements) x freshness, where affinity is
the seed-weighted cosine similarity that retrieved the candidate (floored so that a popular
fallback still ranks by popularity). Every factor is logged in the notification's ``reason``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

TRANSPARENT_VERSION = "transparent-v1"
AFFINITY_FLOOR = 0.01


class Ranker(Protocol):
    """A champion bound to the run's features (see ``two_tower.serving.ChampionRanker.bind``)."""

    version: str

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray: ...


def transparent(sim: np.ndarray, prior: np.ndarray) -> np.ndarray:
    return np.maximum(sim, AFFINITY_FLOOR) * prior


def champion_scores(ranker: Any, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Scores from the champion, checked to be one finite number per pair."""
    scores = np.asarray(ranker.score(user_ids, item_ids), dtype=np.float64).ravel()
    if scores.shape != (len(user_ids),) or not np.isfinite(scores).all():
        raise ValueError(f"champion ranker {getattr(ranker, 'version', '?')} returned {scores.shape[0]} scores "
                         f"for {len(user_ids)} pairs or non-finite values")
    return scores


def best_in_groups(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Index of the first highest-scoring row of each run of equal ``group`` values (input sorted by group)."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    is_start = np.concatenate(([True], group[1:] != group[:-1]))
    owner = np.cumsum(is_start) - 1
    top = np.maximum.reduceat(score, np.flatnonzero(is_start))
    hit = np.flatnonzero(score == top[owner])
    return hit[np.concatenate(([True], owner[hit[1:]] != owner[hit[:-1]]))]


def best_per_key(key: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Index of the highest-scoring row per key, in ascending key order; equal scores go to the earlier row.

    A stable sort makes the tie-break depend on a user's own rows only, not on the other users in
    the batch (a shard of users gets the same choices as one process).
    """
    n = len(key)
    shift = max(int(n - 1).bit_length(), 1)
    if n == 0 or int(key.max()) >= 1 << (63 - shift):
        order = np.argsort(key, kind="stable")
    else:  # (key, row) packed in one int64: a plain sort orders keys and keeps rows in order, ~2x faster
        order = np.sort((key << shift) | np.arange(n, dtype=np.int64), kind="stable") & ((1 << shift) - 1)
    return order[best_in_groups(key[order], score[order])]
