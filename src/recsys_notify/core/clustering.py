"""Batched per-user clustering: many small DBSCANs at once, without a Python loop per user.

Rows are grouped by user (``starts``/``sizes`` index a matrix of L2-normalised vectors). Users
are bucketed by padded size (ratio 2**0.25); each bucket is processed in chunks with one batched
matmul giving every user's cosine-similarity matrix. A cluster is a connected component of the
core points' neighbour graph plus each border point joined to its most similar core. Dense
neighbour graphs have O(n^2) edges, so components are not found from every edge: each core point
first links to its first core neighbour (a forest, rooted at each tree's first row, found on the
dense matrices), and only the few neighbour pairs that cross two trees go to a sparse graph.
Users never share an edge, so components never cross users. Noise points (neither core nor next
to a core) end up as singleton components: we keep them as their own clusters instead of
dropping them, so a rare one-off interest can still earn a medoid slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

BIG_USER = 4096  # above this many items a user is processed alone in row blocks
ROW_BLOCK = 2048


@dataclass(frozen=True)
class GatheredRows:
    """Row ``i`` is ``matrix[codes[i]]``, gathered only when indexed: a shard's interactions repeat far
    fewer items, and a row per interaction (hundreds of MB of fresh memory) is never held."""

    matrix: np.ndarray
    codes: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return self.matrix[self.codes[key]]


Vectors = np.ndarray | GatheredRows  # the row vectors the clusterings read by index


def dbscan_components(starts: np.ndarray, sizes: np.ndarray, X: Vectors, eps: float, min_samples: int,
                      budget: int = 1 << 21) -> tuple[np.ndarray, np.ndarray]:
    """DBSCAN (cosine metric, ``dist <= eps``) for every user; returns ``(component, core)`` per row.

    ``X`` must be L2-normalised float32 with each user's rows contiguous at ``starts``.
    ``component`` is the first row of each row's cluster (so a user's clusters are ordered by
    their first row); border points join their most similar core. ``budget`` bounds the
    similarity entries of one chunk of users (small enough to stay in cache).
    BLAS runs on one thread: the products are small, extra threads would spin, not help.
    """
    threshold = np.float32(1.0 - eps)
    component = np.arange(len(X), dtype=np.int64)
    core_all = np.zeros(len(X), dtype=bool)
    padded = _bucket_sizes(sizes)
    with threadpool_limits(1, "blas"):
        for size in np.unique(padded):
            users = np.flatnonzero(padded == size)
            if size > BIG_USER:
                for u in users:
                    rows = slice(starts[u], starts[u] + sizes[u])
                    first, core_all[rows] = _big_user(X[rows], threshold, min_samples)
                    component[rows] = first + starts[u]
                continue
            per_chunk = max(1, budget // int(size * size))
            for lo in range(0, len(users), per_chunk):
                chunk = users[lo:lo + per_chunk]
                first, core, idx, valid = _padded_chunk(X, starts[chunk], sizes[chunk], int(size), threshold,
                                                        min_samples)
                flat_idx = idx.ravel()
                component[idx[valid]] = flat_idx[first[valid.ravel()]]
                core_all[idx[valid]] = core[valid]
    return component, core_all


def _bucket_sizes(sizes: np.ndarray) -> np.ndarray:
    """Padded size per user: the next of 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ... (ratio 2**0.25 keeps padding <20%)."""
    steps = np.ceil(4 * np.log2(np.maximum(sizes, 4) / 4) - 1e-9)
    return np.ceil(4 * 2 ** (steps / 4) - 1e-9).astype(np.int64)


def _padded_chunk(X: Vectors, starts: np.ndarray, sizes: np.ndarray, size: int, threshold: np.float32,
                  min_samples: int) -> tuple[np.ndarray, ...]:
    """First padded position (``user * size + row``) of each position's cluster, and core flags, for a chunk."""
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
    adj &= core[:, None, :]  # each row's core neighbours (a core row: its edges; a border row: its candidates)
    first = _core_components(adj, core)
    bb, bi = np.nonzero(valid & ~core)
    candidates = adj[bb, bi]
    border = candidates.any(axis=1)
    if border.any():
        bb, bi, candidates = bb[border], bi[border], candidates[border]
        near = np.where(candidates, S[bb, bi], -np.inf).argmax(axis=1)
        first = _join_borders(first, bb * size + bi, first[bb * size + near])
    return first, core, idx, valid


def _core_components(adj: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Per flat position, the first position of its core component (itself when not core).

    ``adj[b, i, j]``: j is a core neighbour of i (rows of non-core points are ignored).
    """
    users, size = core.shape
    own = np.arange(size)
    adj[:, own, own] |= core  # a core point is its own first candidate, so its parent never comes later
    parent = np.where(core, adj.argmax(axis=2), own)
    while True:  # pointer jumping to each tree's root, its first position
        up = np.take_along_axis(parent, parent, axis=1)
        if np.array_equal(up, parent):
            break
        parent = up
    root = (parent + (np.arange(users) * size)[:, None]).ravel()
    crossing = parent[:, :, None] != parent[:, None, :]
    crossing &= adj
    flat = np.flatnonzero(crossing)
    rows = flat // size
    keep = core.ravel()[rows]
    if not keep.any():
        return root
    rows, cols = rows[keep], (flat // (size * size) * size + flat % size)[keep]
    return _first_members(root, root[rows], root[cols])


def _first_members(node_of: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``node_of`` mapped to the smallest node of its component in the graph of edges ``(r, c)``."""
    nodes = len(node_of)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(nodes, nodes))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max() + 1, nodes, dtype=np.int64)
    np.minimum.at(first, label, np.arange(nodes))
    return first[label][node_of]


def _join_borders(first: np.ndarray, border: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Border positions join ``target`` components; a component's first position may now be a border."""
    lowest = np.arange(len(first))
    np.minimum.at(lowest, target, border)
    first = first.copy()
    first[border] = target
    return lowest[first]


def _big_user(Xu: np.ndarray, threshold: np.float32, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """One large user in row blocks (bounded memory): first local row of each row's cluster, core flags."""
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
    return _first_members(np.arange(n), np.concatenate(rows), np.concatenate(cols)), core


def hdbscan_components(starts: np.ndarray, sizes: np.ndarray, X: Vectors, min_cluster_size: int,
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


def grouped_order(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``np.lexsort((key, group))`` (by group, then key, then row), several times faster.

    One stable sort of ``group`` and the top bits of ``key``'s order-preserving integer image packed in
    64 bits; only rows whose packed values tie are re-sorted by the whole key (rare for continuous keys).
    Input already grouped (rows usually come by user) makes the stable sort faster still.
    """
    n = len(key)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    g = group.astype(np.int64) - group.min()
    shift = int(g.max()).bit_length()
    ordered = _ordered_bits(np.asarray(key, dtype=np.float64))
    packed = (g.astype(np.uint64) << np.uint64(64 - shift)) | (ordered >> np.uint64(shift)) if shift else ordered
    order = np.argsort(packed, kind="stable")
    sorted_packed = packed[order]
    tie = sorted_packed[1:] == sorted_packed[:-1]
    if tie.any():
        in_run = np.r_[tie, False] | np.r_[False, tie]
        pos = np.flatnonzero(in_run)
        run = np.cumsum(np.r_[True, ~tie])[pos]  # a tied run's number; its rows are in row order
        rows = order[pos]
        order[pos] = rows[np.lexsort((ordered[rows], run))]
    return order


def _ordered_bits(key: np.ndarray) -> np.ndarray:
    """uint64 images of float64 keys in the order ``np.sort`` gives them (-0.0 == 0.0, every NaN last and equal)."""
    canonical = np.where(np.isnan(key), np.nan, key + 0.0)  # -0.0 + 0.0 is 0.0; one NaN bit pattern
    bits = canonical.view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


def row_labels(component: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(component, return_inverse=True, return_counts=True)`` for labels that are row numbers
    (``0 <= label < len``, as the component functions return) in linear time, without a sort."""
    is_label = np.zeros(len(component), dtype=bool)
    is_label[component] = True
    labels = np.flatnonzero(is_label)
    position = np.cumsum(is_label) - 1
    inverse = position[component]
    return labels, inverse, np.bincount(inverse, minlength=len(labels))


def rank_within(groups_sorted: np.ndarray) -> np.ndarray:
    """0-based position of each element inside its run of equal values (input already sorted)."""
    n = len(groups_sorted)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = groups_sorted[1:] != groups_sorted[:-1]
    first = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    return np.arange(n) - first
