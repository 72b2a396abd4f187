"""Stable integer hashing for sharding, holdouts and seeded sampling.

Python's ``hash`` changes per process; these give the same value on every machine and run.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 of each uint64 value (wrap-around arithmetic is intended)."""
    with np.errstate(over="ignore"):
        x = (np.asarray(x).astype(np.uint64) + GOLDEN).astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
