"""Stable integer hashing for sharding, holdouts and seeded sampling.

Python's ``hash`` changes per process; these give the same value on every machine and run.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 of each uint64 value (wrap-around arithmetic is intended).

    Computed in two arrays, in place: every events write and shard read hashes millions of user ids.
    """
    x = np.asarray(x).astype(np.uint64)  # a copy, so the caller's array is left as it is
    shifted = np.empty_like(x)
    with np.errstate(over="ignore"):
        x += GOLDEN
        for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            np.right_shift(x, np.uint64(shift), out=shifted)
            x ^= shifted
            x *= np.uint64(multiplier)
        np.right_shift(x, np.uint64(31), out=shifted)
        x ^= shifted
    return x
