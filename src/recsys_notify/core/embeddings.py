"""Item vectors for clustering and retrieval, from the configured embedding source.

``content`` is the items' PCA-128 content embedding (items as of the date); ``gem`` is the generic
embedding model's output (``gem_embeddings``, newest partition on or before the date). Both are
trimmed to the first ``trimmed_dim`` values (PCA order puts the most variance first). A step adds
:func:`vectors_request` to its inputs and reads the resolved partitions with :func:`item_vectors`.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_notify.core.contract import EMBEDDING_DIM, ContractError, embedding_matrix
from recsys_notify.core.datasets import GEM_EMBEDDINGS, ITEMS
from recsys_notify.core.inputs import Inputs, Request, as_of, newest

Source = Literal["content", "gem"]
VECTORS = "vectors"  # the role :func:`vectors_request` is resolved under


def vectors_request(source: Source, dt: date) -> Request:
    """The partitions the item vectors of ``source`` on ``dt`` come from."""
    if source == "content":
        return as_of(ITEMS, dt)
    if source == "gem":
        return newest(GEM_EMBEDDINGS, dt)
    raise ValueError(f"unknown embedding source {source!r}; expected 'content' or 'gem'")


def item_vectors(inputs: Inputs, source: Source = "content", dim: int | None = 16,
                 item_ids: np.ndarray | None = None, role: str = VECTORS) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(item_ids, float32 matrix)`` from the resolved ``role``, optionally only ``item_ids``.

    Unknown ids requested in ``item_ids`` are an error naming how many and one example.
    """
    table = inputs.dimension_table(role, ["item_id", "embedding"])
    dt = inputs[role].request.end
    ids = table.column("item_id").to_numpy().astype(np.int64, copy=False)
    rows = None  # every row, else the positions of ``item_ids``
    if item_ids is not None:
        wanted = pd.Index(np.asarray(item_ids, dtype=np.int64))
        rows = pd.Index(ids).get_indexer(wanted)
        if (rows < 0).any():
            missing = wanted[rows < 0]
            raise ContractError(f"{len(missing)} item id(s) have no {source} embedding on {dt}, e.g. {missing[0]}")
        ids = ids[rows]
    vectors = table.column("embedding")
    # content vectors have the contract width; gem width is whatever the model wrote (its most common length)
    width = EMBEDDING_DIM if source == "content" or not len(ids) else common_length(vectors, rows)
    if dim is not None and not 0 < dim <= width:
        raise ValueError(f"dim {dim} is out of range for {source} embeddings of width {width}")
    matrix = stacked(vectors, width, dim or width)  # every row, trimmed: cheaper than taking the wide rows first
    if matrix is None:  # some vector is bad: the pandas path names it if it is one of those asked for
        wide = vectors.take(rows) if rows is not None else vectors
        return ids, np.ascontiguousarray(embedding_matrix(wide.to_pandas(), dim=width)[:, :dim or width])
    return ids, matrix[rows] if rows is not None else np.ascontiguousarray(matrix)


def common_length(vectors: pa.ChunkedArray, rows: np.ndarray | None = None) -> int:
    """The most common length of a list column's ``rows`` (the shortest of equally common ones); 1 when all are null."""
    lengths = pc.list_value_length(vectors).to_numpy(zero_copy_only=False)  # NaN where null
    lengths = lengths if rows is None else lengths[rows]
    lengths = lengths[~np.isnan(lengths)].astype(np.int64) if lengths.dtype.kind == "f" else lengths
    return int(np.bincount(lengths).argmax()) if len(lengths) else 1


def stacked(vectors: pa.ChunkedArray, width: int, dim: int) -> np.ndarray | None:
    """The first ``dim`` values of each row of a list column as float32, straight from its Arrow buffers
    chunk by chunk; None unless every row is ``width`` finite floats, not all zero (then
    :func:`embedding_matrix` says which row is not)."""
    parts = []
    for chunk in vectors.chunks:
        if chunk.null_count or not pa.types.is_floating(getattr(chunk.type, "value_type", pa.null())):
            return None
        if len(chunk) and pc.min_max(pc.list_value_length(chunk)).as_py() != {"min": width, "max": width}:
            return None
        values = chunk.flatten()
        if values.null_count:
            return None
        with np.errstate(over="ignore"):
            matrix = values.to_numpy().astype(np.float32, copy=False).reshape(len(chunk), width)
        if not (np.isfinite(matrix).all() and matrix.any(axis=1).all()):
            return None
        parts.append(matrix[:, :dim])
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Row-normalise (zero rows stay zero) so inner product equals cosine similarity."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)
