"""Corruption toolkit: turn a valid frame or committed partition into a specific kind of bad input.

Frame functions return a corrupted *copy* (the input is never modified) and, where rows are
touched, pick them deterministically with :func:`pick`. Partition functions damage files of a
committed partition in place and return the path they damaged. ``ROW_CASES`` lists the row-level
corruptions with the quarantine reason the contract must report for them, so tests can run every
case through the same assertions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from recsys_notify.core.storage import MANIFEST, Storage


def pick(df: pd.DataFrame, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct row positions chosen reproducibly."""
    return np.sort(np.random.default_rng(seed).choice(len(df), size=min(n, len(df)), replace=False))


def _set(df: pd.DataFrame, col: str, rows: np.ndarray, value: object) -> pd.DataFrame:
    """Copy with ``value`` at row positions ``rows`` (nullable dtypes so a null stays a null, not 0/False)."""
    out = df.copy()
    if value is None and pd.api.types.is_integer_dtype(out[col]):
        out[col] = out[col].astype("Int64")
    out.iloc[rows, out.columns.get_loc(col)] = value
    return out


# ----- schema-level corruption (whole partition is refused) -----
def drop_column(df: pd.DataFrame, col: str) -> pd.DataFrame:
    return df.drop(columns=[col])


def wrong_dtype(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Replace a column with text that cannot be cast to its contract type."""
    out = df.copy()
    out[col] = [f"bad-{i}" for i in range(len(out))]
    return out


def fractional_ids(df: pd.DataFrame, col: str, n: int = 3, seed: int = 0) -> pd.DataFrame:
    """Ids stored as floats, some with a fraction (a lossy upstream cast)."""
    out = df.copy()
    out[col] = out[col].astype("float64")
    out.loc[out.index[pick(df, n, seed)], col] += 0.5
    return out


def empty(df: pd.DataFrame) -> pd.DataFrame:
    """Same columns, no rows."""
    return df.iloc[:0].copy()


# ----- row-level corruption (rows are quarantined with a reason) -----
def null_values(df: pd.DataFrame, col: str, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _set(df, col, pick(df, n, seed), None)


def negative_watch_time(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _set(df, "watch_time_s", pick(df, n, seed), -5.0)


def nan_watch_time(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _set(df, "watch_time_s", pick(df, n, seed), float("nan"))


def zero_duration(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _set(df, "duration_s", pick(df, n, seed), 0.0)


def clock_skew(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    """Watch time far beyond the item's duration (completion > 1.5)."""
    out = df.copy()
    rows = out.index[pick(df, n, seed)]
    out.loc[rows, "watch_time_s"] = out.loc[rows, "duration_s"] * 3.0
    return out


def duplicate_events(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    """Append exact copies of ``n`` rows (an at-least-once upstream redelivering)."""
    return pd.concat([df, df.iloc[pick(df, n, seed)]], ignore_index=True)


def unknown_items(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    """Point events at item ids no catalogue has (valid ids near 2^62, far beyond any generated one)."""
    out = df.copy()
    rows = pick(df, n, seed)
    out.loc[out.index[rows], "item_id"] = 2**62 + np.arange(len(rows))
    return out


def _embeddings(df: pd.DataFrame, n: int, seed: int, make: Callable[[np.ndarray], object]) -> pd.DataFrame:
    out = df.copy()
    values = list(out["embedding"])
    for r in pick(df, n, seed):
        values[r] = make(np.asarray(values[r], dtype=np.float32))
    out["embedding"] = values
    return out


def embedding_nan(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _embeddings(df, n, seed, lambda v: np.where(np.arange(v.size) == 0, np.nan, v).astype(np.float32))


def embedding_inf(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _embeddings(df, n, seed, lambda v: np.where(np.arange(v.size) == 1, np.inf, v).astype(np.float32))


def embedding_wrong_length(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _embeddings(df, n, seed, lambda v: v[:-1].copy())


def embedding_zeros(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _embeddings(df, n, seed, lambda v: np.zeros_like(v))


def embedding_not_numeric(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _embeddings(df, n, seed, lambda v: ["x"] * v.size)


def unknown_language(df: pd.DataFrame, n: int = 3, seed: int = 0) -> pd.DataFrame:
    return _set(df, "language", pick(df, n, seed), "xx")


@dataclass(frozen=True)
class RowCase:
    """A row-level corruption, the dataset it applies to, and the quarantine reason it must produce."""

    name: str
    dataset: str
    corrupt: Callable[[pd.DataFrame], pd.DataFrame]
    reason: str
    added_rows: bool = False  # the corruption appends rows instead of changing existing ones


ROW_CASES: list[RowCase] = [
    RowCase("null user_id", "events", lambda df: null_values(df, "user_id"), "null user_id"),
    RowCase("null item_id", "events", lambda df: null_values(df, "item_id"), "null item_id"),
    RowCase("negative watch time", "events", negative_watch_time, "negative watch_time_s"),
    RowCase("NaN watch time", "events", nan_watch_time, "watch_time_s is NaN"),
    RowCase("duration 0", "events", zero_duration, "duration_s <= 0"),
    RowCase("completion > 1.5", "events", clock_skew, "completion > 1.5 (clock skew)"),
    RowCase("duplicate events", "events", duplicate_events, "duplicate event", added_rows=True),
    RowCase("unknown item", "events", unknown_items, "unknown item_id"),
    RowCase("null item_id (items)", "items", lambda df: null_values(df, "item_id"), "null item_id"),
    RowCase("item duration 0", "items", zero_duration, "duration_s <= 0"),
    RowCase("embedding NaN", "items", embedding_nan, "embedding has NaN or inf"),
    RowCase("embedding inf", "items", embedding_inf, "embedding has NaN or inf"),
    RowCase("embedding wrong length", "items", embedding_wrong_length, "embedding length 127 != 128"),
    RowCase("embedding all zeros", "items", embedding_zeros, "embedding all zeros"),
    RowCase("embedding not numeric", "items", embedding_not_numeric, "embedding not numeric"),
    RowCase("unknown language (items)", "items", unknown_language, "unknown language code"),
    RowCase("unknown language (users)", "users", unknown_language, "unknown language code"),
    RowCase("null user_id (users)", "users", lambda df: null_values(df, "user_id"), "null user_id"),
]


# ----- damage to committed partitions -----
def corrupt_parquet(storage: Storage, dataset: str, dt: date, mode: str = "garbage") -> str:
    """Overwrite the first data file of a partition: ``garbage`` bytes, ``truncate`` to half, or ``delete`` it."""
    path = storage.files(dataset, dt)[0]
    if mode == "delete":
        storage.fs.rm(path)
        return path
    with storage.fs.open(path, "rb") as fh:
        data = fh.read()
    payload = b"not a parquet file" * 8 if mode == "garbage" else data[: len(data) // 2]
    with storage.fs.open(path, "wb") as fh:
        fh.write(payload)
    return path


def corrupt_manifest(storage: Storage, dataset: str, dt: date) -> str:
    """Truncate the partition's commit marker to invalid JSON."""
    path = f"{storage.partition_path(dataset, dt)}/{MANIFEST}"
    with storage.fs.open(path, "w") as fh:
        fh.write('{"files": [')
    return path


class FailingChunks:
    """Iterable of table chunks that raises after yielding ``fail_after`` of them (a task killed mid-write)."""

    def __init__(self, frame: pd.DataFrame, chunks: int = 4, fail_after: int = 2):
        import pyarrow as pa

        bounds = np.linspace(0, len(frame), chunks + 1).astype(int)
        self.parts = [pa.Table.from_pandas(frame.iloc[a:b], preserve_index=False) for a, b in zip(bounds, bounds[1:])]
        self.fail_after = fail_after
        self.yielded = 0

    def __iter__(self):
        for i, part in enumerate(self.parts):
            if i == self.fail_after:
                raise KillSimulated(f"writer killed after {i} chunk(s)")
            self.yielded += 1
            yield part


class KillSimulated(RuntimeError):
    """Raised by :class:`FailingChunks` to simulate a task dying mid-write."""


def debris(storage: Storage, dataset: str) -> list[str]:
    """What a write left besides committed data: locks, temp manifests, unreferenced versions, uncommitted dirs.

    The version a commit replaced is not debris: it is kept for readers still on it until the next commit.

    Must be empty after any write that returned or raised; a killed writer may leave some, which readers
    ignore and the next write of that date removes.
    """
    base = storage.dataset_path(dataset)
    if not storage.fs.exists(base):
        return []
    found = []
    for entry in storage.fs.ls(base, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("dt="):
            found.append(name)
            continue
        committed = storage.fs.exists(f"{entry}/{MANIFEST}")
        keep = {MANIFEST}
        if committed:
            manifest = storage.manifest(dataset, name[3:])
            keep |= {f.split("/", 1)[0] for f in manifest["files"]} | {manifest.get("previous")}
        leaves = (e.rstrip("/").rsplit("/", 1)[-1] for e in storage.fs.ls(entry, detail=False))
        found += [f"{name}/{leaf}" for leaf in leaves if leaf not in keep]
        if not committed and not storage.fs.ls(entry, detail=False):
            found.append(name)
    return sorted(found)
