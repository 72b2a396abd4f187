"""Collapse a window of events into one weighted row per unique (user, item) interaction.

The weight depends on which engagement kinds the user showed for the item over the window
(full watch, like, share) via the config table ``interaction_weights``: none -> ``view``, one kind
-> that kind's weight, two -> ``any_two``, three -> ``all_three``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_notify.core.config import InteractionWeights

EVENT_COLUMNS = ["user_id", "item_id", "ts", "completion", "liked", "shared"]


def weigh_interactions(events: pd.DataFrame, weights: InteractionWeights) -> pd.DataFrame:
    """One row per (user_id, item_id), sorted by both: engagement flags, ``last_ts``, ``n_events`` and ``weight``.

    Events are sorted by pair once and each pair's run reduced in NumPy (no per-group Python);
    ``full_watch`` is ``max(completion) > full_watch_completion``.
    """
    user, item = events["user_id"].to_numpy(np.int64), events["item_id"].to_numpy(np.int64)
    order = _pair_order(user, item)
    user, item = user[order], item[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    starts = np.flatnonzero(new)
    stamps = utc_instants(events["ts"])
    if len(starts):
        full_watch = np.maximum.reduceat(events["completion"].to_numpy(np.float64)[order], starts) \
            > weights.full_watch_completion
        liked = np.logical_or.reduceat(events["liked"].to_numpy(bool)[order], starts)
        shared = np.logical_or.reduceat(events["shared"].to_numpy(bool)[order], starts)
        last = np.maximum.reduceat(stamps[order].view(np.int64), starts).view(stamps.dtype)
    else:
        full_watch = liked = shared = np.zeros(0, dtype=bool)
        last = stamps[:0]
    code = full_watch.astype(np.int64) * 4 + liked * 2 + shared
    return pd.DataFrame({
        "user_id": user[starts], "item_id": item[starts], "full_watch": full_watch, "liked": liked,
        "shared": shared, "last_ts": pd.DatetimeIndex(last).tz_localize("UTC"),
        "n_events": np.diff(np.r_[starts, len(order)]).astype(np.int64), "weight": weight_table(weights)[code],
    }, copy=False)  # fresh arrays: no copy into consolidated blocks


def utc_instants(ts: pd.Series) -> np.ndarray:
    """Timestamps as naive UTC ``datetime64`` (naive input is taken as UTC), without copying a datetime column."""
    if ts.dtype.kind != "M":
        ts = pd.to_datetime(ts, utc=True)
    return np.asarray(ts.array, dtype=f"datetime64[{ts.array.unit}]")


def _pair_order(user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Row order by (user, item): one argsort of a packed key when both ranges fit in 63 bits."""
    if len(user) == 0:
        return np.zeros(0, dtype=np.int64)
    u0, i0 = int(user.min()), int(item.min())
    span = int(item.max()) - i0 + 1
    if (int(user.max()) - u0 + 1) * span < 2**63:
        return np.argsort((user - u0) * span + (item - i0), kind="stable")  # faster on rows grouped by user
    return np.lexsort((item, user))


def weight_table(weights: InteractionWeights) -> np.ndarray:
    """Weight indexed by the 3-bit code full_watch*4 + liked*2 + shared."""
    single = {4: weights.full_watch, 2: weights.like, 1: weights.share}
    table = np.empty(8)
    for code in range(8):
        kinds = bin(code).count("1")
        table[code] = (weights.view, single.get(code), weights.any_two, weights.all_three)[kinds]
    return table
