"""GEM training data from the resolved frames: item content vectors, mined pairs, interactions, holdout.

Every converter checks what it gets and fails with a message naming the column or ids at fault,
before any training starts (so nothing is written from bad input). No storage here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from recsys_notify.core.config import Settings
from recsys_notify.core.contract import ContractError, embedding_matrix
from recsys_notify.core.interaction_weights import weigh_interactions

PAIR_COLUMNS = ["item1", "item2", "pair_type", "num_clients", "content_sim", "sim_bucket"]
PAIR_TYPES = ("positive", "negative")


@dataclass(frozen=True)
class Items:
    """Every item known on the run date with its content embedding (row order = position)."""

    ids: np.ndarray
    content: np.ndarray

    def positions(self, ids: np.ndarray, what: str) -> np.ndarray:
        """Row positions of ``ids``; unknown ids are an error naming ``what`` referenced them."""
        pos = pd.Index(self.ids).get_indexer(np.asarray(ids, dtype=np.int64))
        if (pos < 0).any():
            unknown = np.unique(np.asarray(ids)[pos < 0])
            raise ContractError(f"{what}: {len(unknown)} item id(s) not in items, e.g. {unknown[0]}")
        return pos


@dataclass(frozen=True)
class Pairs:
    """Mined pairs as item positions; ``positive`` False marks negative pairs."""

    left: np.ndarray
    right: np.ndarray
    positive: np.ndarray
    num_clients: np.ndarray
    sim_bucket: np.ndarray

    def subset(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.left[mask], self.right[mask], self.positive[mask], self.num_clients[mask],
                     self.sim_bucket[mask])

    def __len__(self) -> int:
        return len(self.left)


def items_from(frame: pd.DataFrame, dt: date) -> Items:
    """Items as of ``dt`` (item_id, embedding) with their content matrix."""
    if frame.empty:
        raise ContractError(f"items: no items known on {dt}")
    return Items(frame["item_id"].to_numpy(np.int64), embedding_matrix(frame["embedding"]))


def pairs_from(frame: pd.DataFrame, dt: date, items: Items) -> Pairs:
    """The ``pairs`` of ``dt`` (pair_mining output, its documented columns) as item positions."""
    for col in ("item1", "item2", "num_clients", "sim_bucket"):
        if not pd.api.types.is_integer_dtype(frame[col]):
            raise ContractError(f"pairs dt={dt}: column {col} must be integer, got {frame[col].dtype}")
    if frame.isna().any().any():
        col = frame.columns[frame.isna().any()][0]
        raise ContractError(f"pairs dt={dt}: column {col} has nulls")
    bad_type = ~frame["pair_type"].isin(PAIR_TYPES)
    if bad_type.any():
        raise ContractError(f"pairs dt={dt}: pair_type must be one of {PAIR_TYPES}, "
                            f"got {frame.loc[bad_type, 'pair_type'].iloc[0]!r}")
    if (frame["item1"] >= frame["item2"]).any():
        broken = int((frame["item1"] >= frame["item2"]).sum())
        raise ContractError(f"pairs dt={dt}: {broken} row(s) break item1 < item2")
    if (frame["num_clients"] < 1).any():
        raise ContractError(f"pairs dt={dt}: num_clients must be >= 1")
    positive = (frame["pair_type"] == "positive").to_numpy()
    if not positive.any():
        raise ContractError(f"pairs dt={dt}: no positive pairs to train or evaluate on")
    return Pairs(
        left=items.positions(frame["item1"].to_numpy(), f"pairs dt={dt} item1"),
        right=items.positions(frame["item2"].to_numpy(), f"pairs dt={dt} item2"),
        positive=positive,
        num_clients=frame["num_clients"].to_numpy(np.int64),
        sim_bucket=frame["sim_bucket"].to_numpy(np.int64),
    )


def interactions_from(events: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """User-item confidence over the GEM window (``interaction_weights``: one weight per pair).

    Watches that pair mining would call negative (short or low completion) are dropped first, so
    ALS learns from what users chose to keep watching.
    """
    pm = settings.pair_mining
    kept = events[(events["watch_time_s"] >= pm.negative_watch_s) & (events["completion"] >= pm.negative_completion)]
    return weigh_interactions(kept, settings.interaction_weights)[["user_id", "item_id", "weight"]]


def choose_holdout(pairs: Pairs, n_items: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of cold-start evaluation items: a seeded share of items that have positive partners."""
    with_partners = np.unique(np.concatenate([pairs.left[pairs.positive], pairs.right[pairs.positive]]))
    rng = np.random.default_rng([seed, 7])
    n_hold = max(1, int(round(len(with_partners) * fraction)))
    mask = np.zeros(n_items, dtype=bool)
    mask[rng.choice(with_partners, n_hold, replace=False)] = True
    return mask
