"""Offline evaluation of mined pairs on synthetic worlds (the generator's ground truth topics)."""

from __future__ import annotations

import pandas as pd


def same_topic_share(pairs: pd.DataFrame, truth_items: pd.DataFrame) -> dict[str, float]:
    """Share of pairs whose items share a ground-truth topic, by pair type."""
    topic = truth_items.set_index("item_id")["topic"]
    same = pairs["item1"].map(topic).to_numpy() == pairs["item2"].map(topic).to_numpy()
    return {t: float(same[(pairs["pair_type"] == t).to_numpy()].mean()) for t in ("positive", "negative")}
