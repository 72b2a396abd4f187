"""Batched per-user clustering: many small DBSCANs at once, without a Python loop per user.

Rows are grouped by user (``starts``/``sizes`` index a matrix of L2-normalised vectors). Users
are bucketed by padded size (powers of two); each bucket is processed in chunks with one batched
matmul giving every user's cosine-similarity matrix. Core points, core-core edges and the
border -> nearest-core edge of every user go into one sparse graph whose connected components
are the clusters (users never share an edge, so components never cross users). Noise points
(neither core nor next to a core) end up as singleton components: we keep them as their own
clusters instead of dropping them, so a rare one-off interest can still earn a medoid slot.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

BIG_USER = 4096  # above this many items a user is processed alone in row blocks
ROW_BLOCK = 2048


def dbscan_components(starts: np.ndarray, sizes: np.ndarray, X: np.ndarray, eps: float, min_samples: int,
                      budget: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
    """DBSCAN (cosine metric, ``dist <= eps``) for every user; returns ``(component, core)`` per row.

    ``X`` must be L2-normalised float32 with each user's rows contiguous at ``starts``.
    ``component`` holds a label unique across users; border points join their most similar core.
    Components are found per chunk of users (a chunk's graph is all its users' edges), so edges
    never accumulate beyond one chunk: heavy users make O(n^2) of them.
    """
    n = len(X)
    threshold = np.float32(1.0 - eps)
    component = np.zeros(n, dtype=np.int64)
    core_all = np.zeros(n, dtype=bool)
    labels = 0

    def label(rows_of: np.ndarray, nodes: int, r: np.ndarray, c: np.ndarray, keep: np.ndarray | None = None) -> None:
        nonlocal labels
        graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(nodes, nodes))
        count, local = connected_components(graph, directed=False)
        component[rows_of] = (local if keep is None else local[keep]) + labels
        labels += count

    padded = _bucket_sizes(sizes)
    for size in np.unique(padded):
        users = np.flatnonzero(padded == size)
        if size > BIG_USER:
            for u in users:
                r, c, core = _big_user(X[starts[u]:starts[u] + sizes[u]], threshold, min_samples)
                label(np.arange(starts[u], starts[u] + sizes[u]), int(sizes[u]), r, c)
                core_all[starts[u]:starts[u] + sizes[u]] = core
            continue
        per_chunk = max(1, budget // int(size * size))
        for lo in range(0, len(users), per_chunk):
            chunk = users[lo:lo + per_chunk]
            r, c, core, idx, valid = _padded_chunk(X, starts[chunk], sizes[chunk], int(size), threshold, min_samples)
            label(idx[valid], valid.size, r, c, valid.ravel())
            core_all[idx[valid]] = core[valid]
    return component, core_all


def _bucket_sizes(sizes: np.ndarray) -> np.ndarray:
    """Padded size per user: the next of 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ... (ratio 2**0.25 keeps padding <20%)."""
    steps = np.ceil(4 * np.log2(np.maximum(sizes, 4) / 4) - 1e-9)
    return np.ceil(4 * 2 ** (steps / 4) - 1e-9).astype(np.int64)


def _padded_chunk(X: np.ndarray, starts: np.ndarray, sizes: np.ndarray, size: int, threshold: np.float32,
                  min_samples: int) -> tuple[np.ndarray, ...]:
    """Edges (between padded positions ``user * size + row``) and core flags for a chunk of users."""
    offsets = np.arange(size)
    valid = offsets[None, :] < sizes[:, None]
    idx = np.where(valid, starts[:, None] + offsets[None, :], 0)
    Xp = X[idx]
    Xp[~valid] = 0.0
    S = np.matmul(Xp, Xp.transpose(0, 2, 1))
    adj = S >= threshold
    if threshold <= 0:  # padding rows are zero vectors: only a huge eps could link them
        adj &= valid[:, :, None]
        adj &= valid[:, None, :]
    core = (adj.sum(axis=2, dtype=np.int32) >= min_samples) & valid
    core_adj = adj
    core_adj &= core[:, None, :]
    # both directions and self loops are harmless for undirected components and cheaper than triu;
    # flat positions are ~10x faster to find than 3-d indices: flat = (user * size + i) * size + j
    flat = np.flatnonzero(core_adj & core[:, :, None])
    rows, cols = [flat // size], [flat // (size * size) * size + flat % size]
    border = valid & ~core & core_adj.any(axis=2)
    if border.any():
        bb, bi = np.nonzero(border)
        near = np.where(core_adj[bb, bi], S[bb, bi], -np.inf).argmax(axis=1)
        rows.append(bb * size + bi)
        cols.append(bb * size + near)
    return np.concatenate(rows), np.concatenate(cols), core, idx, valid


def _big_user(Xu: np.ndarray, threshold: np.float32, min_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One large user in row blocks (bounded memory): local edges and core flags."""
    n = len(Xu)
    degree = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, ROW_BLOCK):
        degree[lo:lo + ROW_BLOCK] = (Xu[lo:lo + ROW_BLOCK] @ Xu.T >= threshold).sum(axis=1)
    core = degree >= min_samples
    rows, cols = [], []
    for lo in range(0, n, ROW_BLOCK):
        S = Xu[lo:lo + ROW_BLOCK] @ Xu.T
        adj = (S >= threshold) & core[None, :]
        block_core = core[lo:lo + ROW_BLOCK]
        i, j = np.nonzero(adj & block_core[:, None])
        keep = j > i + lo
        rows.append(i[keep] + lo)
        cols.append(j[keep])
        border = ~block_core & adj.any(axis=1)
        bi = np.flatnonzero(border)
        if len(bi):
            rows.append(bi + lo)
            cols.append(np.where(adj[bi], S[bi], -np.inf).argmax(axis=1))
    return np.concatenate(rows), np.concatenate(cols), core


def hdbscan_components(starts: np.ndarray, sizes: np.ndarray, X: np.ndarray, min_cluster_size: int,
                       min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN per user (Euclidean on unit vectors, monotone in cosine); noise -> singletons.

    HDBSCAN has no batched form, so this loops over users large enough to form a cluster; it is
    the slower, opt-in alternative to :func:`dbscan_components`.
    """
    import hdbscan

    component = np.arange(len(X), dtype=np.int64)
    clustered = np.zeros(len(X), dtype=bool)
    for u in np.flatnonzero(sizes >= min_cluster_size):
        lo, n = int(starts[u]), int(sizes[u])
        labels = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples).fit(
            X[lo:lo + n].astype(np.float64)).labels_
        for label in np.unique(labels[labels >= 0]):
            members = np.flatnonzero(labels == label) + lo
            component[members] = members[0]
            clustered[members] = True
    return component, clustered


def segment_sums(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum the rows of ``values`` per group id (0..n_groups-1)."""
    order = np.argsort(group, kind="stable")
    sorted_groups = group[order]
    bounds = np.searchsorted(sorted_groups, np.arange(n_groups))
    out = np.zeros((n_groups,) + values.shape[1:], dtype=np.float64)
    present = np.unique(sorted_groups)
    sums = np.add.reduceat(values[order].astype(np.float64), bounds[present], axis=0)
    out[present] = sums
    return out


def cosine_medoid_scores(group: np.ndarray, X: np.ndarray, n_groups: int) -> np.ndarray:
    """Per row, ``x_i . sum_j x_j`` over its group: the exact 1-medoid under cosine distance maximises it.

    For unit vectors ``sum_j (1 - x_i . x_j) = m - x_i . s`` with ``s`` the group's vector sum,
    so the total-distance minimiser is found in O(m d) instead of O(m^2 d).
    """
    sums = segment_sums(group, X, n_groups)
    return np.einsum("ij,ij->i", X.astype(np.float64), sums[group])


def rank_within(groups_sorted: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its run of equal values (input already sorted)."""
    n = len(groups_sorted)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = groups_sorted[1:] != groups_sorted[:-1]
    first = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return np.arange(n) - first
