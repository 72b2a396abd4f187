"""Who gets a notification today: frequency cap, deterministic holdout, users without medoids."""

from __future__ import annotations

import numpy as np

HOLDOUT_SALT = 0
VARIANT_SALT = 1


def user_hash(user_ids: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """SplitMix64 of the user id: stable across runs, machines and Python versions."""
    with np.errstate(over="ignore"):
        x = np.asarray(user_ids, dtype=np.int64).astype(np.uint64)
        x = x + np.uint64((seed * 1_000_003 + salt) & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def holdout(user_ids: np.ndarray, percent: float, seed: int) -> np.ndarray:
    """True for the ``percent`` of users (by hash, in 0.01% steps) who are recorded but not notified."""
    return (user_hash(user_ids, seed, HOLDOUT_SALT) % np.uint64(10_000)) < np.uint64(round(percent * 100))
