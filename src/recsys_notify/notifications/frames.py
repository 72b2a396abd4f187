"""The big image of each push (pure): the item's keyframe closest to the interest that produced it, else its cover.

The interest is the seed item that retrieved the candidate (a user medoid or a short-term positive),
else the representative of the global cluster it came from. Frames and interests are compared in
the item content-embedding space (cosine on the first ``d`` PCA-ordered values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_notify.core.embeddings import l2_normalize
from recsys_notify.notifications.ranking import best_in_groups

FRAME_SOURCES = ("seed", "cluster", "cover")


@dataclass
class Keyframes:
    """Frames by item position (sorted by item position, then frame_ts)."""

    item_pos: np.ndarray
    ts: np.ndarray
    vectors: np.ndarray  # l2-normalised, trimmed to the content vectors' width
    uri: np.ndarray

    @classmethod
    def of(cls, frames: pd.DataFrame, item_pos: np.ndarray, dim: int) -> Keyframes:
        """``frames`` rows (item_id, frame_ts, embedding, image_uri) at their known items' positions ``item_pos``."""
        order = np.lexsort((frames["frame_ts"].to_numpy(np.float64), item_pos))
        vectors = np.stack(frames["embedding"].to_numpy()[order]).astype(np.float32)[:, :dim] if len(frames) \
            else np.zeros((0, dim), np.float32)
        return cls(item_pos[order], frames["frame_ts"].to_numpy(np.float64)[order], l2_normalize(vectors),
                   frames["image_uri"].astype(str).to_numpy()[order])


@dataclass
class FrameChoice:
    ts: np.ndarray  # NaN for the cover
    uri: np.ndarray  # None for the cover
    source: np.ndarray  # index into FRAME_SOURCES
    cosine: np.ndarray


def interests(seed: np.ndarray, cluster: np.ndarray, cluster_reps: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Item position whose content vector stands for each push's interest, and which kind it is (-1 = none)."""
    rep = np.full(int(cluster.max(initial=-1)) + 1 if len(cluster) else 0, -1, dtype=np.int64)
    first = cluster_reps.drop_duplicates("cluster_pos")
    inside = first["cluster_pos"].to_numpy() < len(rep)
    rep[first["cluster_pos"].to_numpy()[inside]] = first["item_pos"].to_numpy()[inside]
    by_cluster = np.where(cluster >= 0, rep[np.maximum(cluster, 0)] if len(rep) else -1, -1)
    item = np.where(seed >= 0, seed, by_cluster)
    kind = np.where(seed >= 0, 0, np.where(by_cluster >= 0, 1, -1))
    return item, kind


def choose(frames: Keyframes | None, items: np.ndarray, interest: np.ndarray, kind: np.ndarray,
           content: np.ndarray) -> FrameChoice:
    """Per push, the frame of ``items`` with the highest cosine to ``content[interest]``; the cover without one."""
    n = len(items)
    out = FrameChoice(np.full(n, np.nan), np.full(n, None, dtype=object), np.full(n, 2, np.int8), np.zeros(n))
    if frames is None or not len(frames.item_pos) or not n:
        return out
    start = np.searchsorted(frames.item_pos, items, "left")
    count = np.searchsorted(frames.item_pos, items, "right") - start
    count[kind < 0] = 0
    push = np.repeat(np.arange(n), count)
    frame = np.repeat(start, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    if not len(frame):
        return out
    sims = np.einsum("ij,ij->i", frames.vectors[frame], l2_normalize(content[interest[push]]))
    best = best_in_groups(push, sims)  # ties go to the earliest frame
    chosen, at = push[best], frame[best]
    out.ts[chosen], out.uri[chosen], out.cosine[chosen] = frames.ts[at], frames.uri[at], sims[best]
    out.source[chosen] = kind[chosen]
    return out
