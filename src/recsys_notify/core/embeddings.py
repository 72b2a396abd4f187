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
    frame = inputs.dimension(role, ["item_id", "embedding"])
    dt = inputs[role].request.end
    if item_ids is not None:
        wanted = pd.Index(np.asarray(item_ids, dtype=np.int64))
        pos = pd.Index(frame["item_id"]).get_indexer(wanted)
        if (pos < 0).any():
            missing = wanted[pos < 0]
            raise ContractError(f"{len(missing)} item id(s) have no {source} embedding on {dt}, e.g. {missing[0]}")
        frame = frame.iloc[pos]
    vectors = frame["embedding"].reset_index(drop=True)
    # content vectors have the contract width; gem width is whatever the model wrote (its most common length)
    width = EMBEDDING_DIM if source == "content" or not len(vectors) else int(vectors.map(np.size).mode().iloc[0])
    if dim is not None and not 0 < dim <= width:
        raise ValueError(f"dim {dim} is out of range for {source} embeddings of width {width}")
    matrix = embedding_matrix(vectors, dim=width)
    if dim is not None:
        matrix = np.ascontiguousarray(matrix[:, :dim])
    return frame["item_id"].to_numpy(np.int64), matrix


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Row-normalise (zero rows stay zero) so inner product equals cosine similarity."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms == 0, 1, norms)).astype(np.float32)
