"""Collapse a window of events into one weighted row per unique (user, item) interaction.

The weight depends on which engagement kinds the user showed for the item over the window
(full watch, like, share) via the config table ``interaction_weights``: none -> ``view``, one kind
-> that kind's weight, two -> ``any_two``, three -> ``all_three``.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from recsys_notify.core.config import InteractionWeights

EVENT_COLUMNS = ["user_id", "item_id", "ts", "completion", "liked", "shared"]

_AGGREGATE_SQL = """
SELECT user_id, item_id,
       max(completion) > ? AS full_watch,
       bool_or(liked) AS liked,
       bool_or(shared) AS shared,
       max(ts) AS last_ts,
       count(*)::BIGINT AS n_events
FROM events
GROUP BY user_id, item_id
ORDER BY user_id, item_id
"""


def weigh_interactions(events: pd.DataFrame, weights: InteractionWeights) -> pd.DataFrame:
    """One row per (user_id, item_id): engagement flags, ``last_ts``, ``n_events`` and ``weight``."""
    con = duckdb.connect()
    try:
        con.register("events", events[EVENT_COLUMNS])
        out = con.execute(_AGGREGATE_SQL, [weights.full_watch_completion]).df()
    finally:
        con.close()
    out["weight"] = weight_table(weights)[
        out["full_watch"].to_numpy(int) * 4 + out["liked"].to_numpy(int) * 2 + out["shared"].to_numpy(int)
    ]
    out["last_ts"] = pd.to_datetime(out["last_ts"], utc=True)
    return out


def weight_table(weights: InteractionWeights) -> np.ndarray:
    """Weight indexed by the 3-bit code full_watch*4 + liked*2 + shared."""
    single = {4: weights.full_watch, 2: weights.like, 1: weights.share}
    table = np.empty(8)
    for code in range(8):
        kinds = bin(code).count("1")
        table[code] = (weights.view, single.get(code), weights.any_two, weights.all_three)[kinds]
    return table
