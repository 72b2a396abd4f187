"""Who gets a notification today: frequency cap, deterministic holdout, users without medoids."""

from __future__ import annotations

import numpy as np

from recsys_notify.core.hashing import GOLDEN, splitmix64

HOLDOUT_SALT = 0
VARIANT_SALT = 1


def user_hash(user_ids: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """SplitMix64 of the user id offset by (seed, salt): stable across runs, machines and Python versions."""
    offset = np.uint64((seed * 1_000_003 + salt) & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        return splitmix64(np.asarray(user_ids, dtype=np.int64).astype(np.uint64) + offset * GOLDEN - GOLDEN)


def holdout(user_ids: np.ndarray, percent: float, seed: int) -> np.ndarray:
    """True for the ``percent`` of users (by hash, in 0.01% steps) who are recorded but not notified."""
    return (user_hash(user_ids, seed, HOLDOUT_SALT) % np.uint64(10_000)) < np.uint64(round(percent * 100))
