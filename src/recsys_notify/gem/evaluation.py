"""Cold-start evaluation: do an item's nearest neighbours include the items users co-engage with?

Held-out items took no part in training (no pairs, no ALS interactions), so their vectors come
from content alone, exactly like a brand-new upload. For each such item we rank every other
known item by cosine similarity and measure:

* ``recall_at_k``: share of its true co-engaged partners (positive pairs) in the top k;
* ``topic_precision_at_k`` / ``style_precision_at_k`` (synthetic data only, from the generator's
  ground truth): share of the top k with the same hidden topic / style.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_notify.core.embeddings import l2_normalize
from recsys_notify.gem.data import Items, Pairs


def truth_labels(truth: pd.DataFrame, items: Items) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Generator topic/style per item (``truth``: item_id, topic, style), or ``(None, None)`` without truth."""
    if truth.empty:
        return None, None
    truth = truth.set_index("item_id")
    unknown = -1 - np.arange(len(items.ids))  # items without truth never count as a match
    topic = truth["topic"].reindex(items.ids).to_numpy(dtype=np.float64)
    style = truth["style"].reindex(items.ids).to_numpy(dtype=np.float64)
    return np.where(np.isnan(topic), unknown, topic), np.where(np.isnan(style), unknown, style)


def partner_lists(pairs: Pairs, queries: np.ndarray) -> list[np.ndarray]:
    """For each query position, the positions of its positive partners."""
    pos = pairs.subset(pairs.positive)
    both = pd.DataFrame({"q": np.concatenate([pos.left, pos.right]), "p": np.concatenate([pos.right, pos.left])})
    grouped = both.groupby("q")["p"].apply(np.asarray)
    return [grouped.get(q, np.zeros(0, dtype=np.int64)) for q in queries]


def top_k(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Positions of the ``k`` most cosine-similar items to each query, excluding the query itself."""
    unit = l2_normalize(vectors)
    k = min(k, len(unit) - 1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        sims = unit[q] @ unit.T
        sims[np.arange(len(q)), q] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[start:start + len(q)] = np.take_along_axis(part, order, axis=1)
    return out


def cold_start_metrics(vectors: np.ndarray, queries: np.ndarray, partners: list[np.ndarray], k: int,
                       topic: np.ndarray | None = None, style: np.ndarray | None = None) -> dict[str, float]:
    """Recall of partners (and, given ground truth, same-topic/style precision) at ``k``."""
    neighbours = top_k(vectors, queries, k)
    has = np.array([len(p) > 0 for p in partners])
    recalls = [np.isin(p, row).mean() for row, p, h in zip(neighbours, partners, has) if h]
    metrics = {f"recall_at_{k}": float(np.mean(recalls)) if recalls else float("nan")}
    for name, label in (("topic", topic), ("style", style)):
        if label is not None:
            same = label[neighbours] == label[queries][:, None]
            metrics[f"{name}_precision_at_{k}"] = float(same.mean())
    return metrics


def compare(candidates: dict[str, np.ndarray], queries: np.ndarray, partners: list[np.ndarray], k: int,
            topic: np.ndarray | None = None, style: np.ndarray | None = None) -> dict[str, float]:
    """``{"<name>_<metric>": value}`` for each named vector set, evaluated on the same queries."""
    out: dict[str, float] = {}
    for name, vectors in candidates.items():
        for metric, value in cold_start_metrics(vectors, queries, partners, k, topic, style).items():
            out[f"{name}_{metric}"] = value
    return out
