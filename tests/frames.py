"""Reading helpers for tests: datasets as of a date, over a range, item vectors: through the resolver steps use."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from recsys_notify.core.datasets import lookup
from recsys_notify.core.embeddings import VECTORS, item_vectors, vectors_request
from recsys_notify.core.inputs import as_of, between, resolve
from recsys_notify.core.storage import Storage, as_date


def upto(storage: Storage, dataset: str, dt: date | str, columns: list[str] | None = None) -> pd.DataFrame:
    """A dimension dataset as of ``dt`` (newest row per id), or every partition up to ``dt`` for others."""
    inputs = resolve(storage, {"d": as_of(lookup(dataset), dt)})
    return inputs.dimension("d", columns) if lookup(dataset).key else inputs.frame("d", columns)


def span(storage: Storage, dataset: str, start: date | str, end: date | str,
         columns: list[str] | None = None) -> pd.DataFrame:
    """Whatever partitions exist from ``start`` to ``end``, concatenated."""
    return resolve(storage, {"d": between(lookup(dataset), start, end)}).frame("d", columns)


def vectors(storage: Storage, dt: date | str, source: str = "content", dim: int | None = 16,
            item_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors of ``source`` on ``dt``, resolved as a step resolves them."""
    inputs = resolve(storage, {VECTORS: vectors_request(source, as_date(dt))})
    return item_vectors(inputs, source, dim, item_ids)
