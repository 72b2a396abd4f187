"""Data contract for the raw datasets (events, items, users) and their validation.

Rows that break the contract are never dropped silently: they go to a sibling
``{dataset}_quarantine`` partition with a ``reason`` column and are counted. A partition that is
missing columns, has uncastable types, is empty, or is mostly invalid fails as a whole with an
error naming the column or count, before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_notify.core.buckets import DEFAULT_BUCKETS, bucketed
from recsys_notify.core.datasets import LANGUAGES, QUARANTINE, RAW, ContractError
from recsys_notify.core.inputs import as_of, resolve
from recsys_notify.core.storage import Storage, as_date
from recsys_notify.core.text import BIDI

EMBEDDING_DIM = 128
MAX_COMPLETION = 1.5  # above this the watch time is a clock-skew artefact, not a rewatch
MAX_DURATION_S = 86_400.0  # one day: a longer video or watch is a unit error (ms, µs) upstream
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# C0/C1 controls (NUL, ESC, CR, LF, ...) and bidi overrides/isolates/marks: they would render into pushes
_UNSAFE_TEXT = re.compile("[\x00-\x1f\x7f-\x9f" + "".join(sorted(BIDI)) + "]")
DERIVED = {"events": ["completion", "bucket"]}  # computed at ingest, not part of the input contract
_KINDS = {"int64": "int64", "float64": "float64", "bool": "bool", "string": "str",
          "timestamp[us, UTC]": "datetime64[us, UTC]", f"list<float32>[{EMBEDDING_DIM}]": "embedding"}

# the input contract of each raw dataset: catalogue columns (minus derived ones) -> the kind they are cast to
SCHEMAS: dict[str, dict[str, str]] = {
    name: {col: _KINDS[typ] for col, typ in ds.schema.items() if col not in DERIVED.get(name, [])}
    for name, ds in RAW.items()
}
KEYS = {name: list(ds.key) if ds.key else ["user_id", "item_id"] for name, ds in RAW.items()}


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def invalid_rows(self) -> int:
        return len(self.quarantine)


def _check_columns(dataset: str, df: pd.DataFrame) -> None:
    missing = [c for c in SCHEMAS[dataset] if c not in df.columns]
    if missing:
        raise ContractError(f"{dataset}: missing column(s) {', '.join(missing)} ({len(df)} rows rejected)")


def _coerce(dataset: str, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Cast to contract dtypes; a value that cannot be cast is a type error for the whole column.

    A value of the right type that does not fit the stored type (a uint64 or float id beyond int64)
    is not cast (it would wrap): it becomes null and its row gets the reason returned alongside.
    """
    out = pd.DataFrame(index=df.index)
    reasons = pd.Series([None] * len(df), index=df.index, dtype=object)
    for col, dtype in SCHEMAS[dataset].items():
        series = df[col]
        try:
            if dtype == "embedding":
                out[col] = series
            elif dtype == "str":
                if not (pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series)):
                    raise TypeError(f"expected strings, got {series.dtype}")
                out[col] = series.astype(object)
            elif dtype.startswith("datetime64"):
                if not pd.api.types.is_datetime64_any_dtype(series):  # text is not parsed: formats are ambiguous
                    raise TypeError(f"expected timestamps, got {series.dtype}")
                out[col] = pd.to_datetime(series, utc=True).astype(dtype)
            elif dtype == "bool":
                if not pd.api.types.is_bool_dtype(series):
                    raise TypeError(f"expected bool, got {series.dtype}")
                out[col] = series.astype(bool)
            elif dtype == "int64":
                if not (pd.api.types.is_integer_dtype(series) or pd.api.types.is_float_dtype(series)):
                    raise TypeError(f"expected integers, got {series.dtype}")
                values = series.dropna()
                if pd.api.types.is_float_dtype(series):
                    finite = values[np.isfinite(values)]
                    if (finite % 1 != 0).any():
                        raise TypeError("non-integer values (a lossy float cast upstream?)")
                    beyond = ~np.isfinite(values) | (values >= 2.0**63) | (values < -(2.0**63))
                elif pd.api.types.is_unsigned_integer_dtype(series):
                    beyond = values > INT64_MAX
                else:
                    beyond = values < INT64_MIN
                beyond = beyond.reindex(series.index, fill_value=False)
                reasons[beyond & reasons.isna()] = f"{col} outside the int64 range"
                if beyond.any():  # through objects: a float detour would round ids above 2^53
                    series = series.astype(object).where(~beyond, None)
                out[col] = series.astype("Int64") if series.isna().any() else series.astype("int64")
            else:
                if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                    raise TypeError(f"expected numbers, got {series.dtype}")
                out[col] = series.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{dataset}: column {col} has wrong type: {exc}") from None
    return out, reasons


def _embedding_problems(values: pd.Series, dim: int) -> pd.Series:
    """Reason per row (or None) for embeddings that are missing, wrong length, non-finite or all zero."""
    reasons = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            reasons.append("embedding missing")
            continue
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            reasons.append("embedding not numeric")
            continue
        with np.errstate(over="ignore"):
            stored = arr.astype(np.float32)  # checked as stored: float64 values can overflow or vanish in float32
        if arr.ndim != 1 or arr.shape[0] != dim:
            reasons.append(f"embedding length {arr.size} != {dim}")
        elif not np.isfinite(arr).all():
            reasons.append("embedding has NaN or inf")
        elif not np.isfinite(stored).all():
            reasons.append("embedding overflows float32")
        elif not arr.any():
            reasons.append("embedding all zeros")
        elif not stored.any():
            reasons.append("embedding all zeros in float32")
        else:
            reasons.append(None)
    return pd.Series(reasons, index=values.index, dtype=object)


def _row_reasons(dataset: str, df: pd.DataFrame, dt: date | None, known_items: np.ndarray | None,
                 cast_reasons: pd.Series) -> pd.Series:
    """First reason each row breaks the contract (None for valid rows); checks run in order."""
    reason = cast_reasons.copy()

    def flag(mask: pd.Series, text: str) -> None:
        mask = mask.fillna(False).astype(bool) & reason.isna()
        reason[mask] = text

    for key in KEYS[dataset] + (["session_id"] if dataset == "events" else []):
        flag(df[key].isna(), f"null {key}")
        if key.endswith("_id"):  # ids are 0..2^63-1, so any difference of two ids fits int64
            flag(df[key] < 0, f"negative {key}")
    for col in ("duration_s", "watch_time_s"):
        if col in df:
            flag(np.isinf(df[col]) | (df[col] > MAX_DURATION_S), f"{col} above {MAX_DURATION_S:.0f} s or infinite")
    if "caption" in df:
        flag(df["caption"].map(lambda v: isinstance(v, str) and bool(_UNSAFE_TEXT.search(v))),
             "caption has control or bidi characters")
    if dataset == "events":
        flag(df["ts"].isna(), "null ts")
        flag(df["watch_time_s"].isna(), "watch_time_s is NaN")
        flag(df["watch_time_s"] < 0, "negative watch_time_s")
        flag(df["duration_s"].isna() | (df["duration_s"] <= 0), "duration_s <= 0")
        completion = df["watch_time_s"] / df["duration_s"].where(df["duration_s"] > 0)
        flag(completion > MAX_COMPLETION, f"completion > {MAX_COMPLETION} (clock skew)")
        if dt is not None:
            flag(df["ts"].dt.floor("D") != pd.Timestamp(dt, tz="UTC"), f"ts outside partition {dt}")
        if known_items is not None:
            flag(~df["item_id"].isin(known_items), "unknown item_id")
        dup_cols = ["user_id", "item_id", "session_id", "ts"]
        flag(df.duplicated(dup_cols, keep="first"), "duplicate event")
    elif dataset == "items":
        flag(df["duration_s"].isna() | (df["duration_s"] <= 0), "duration_s <= 0")
        flag(~df["language"].isin(LANGUAGES), "unknown language code")
        problems = _embedding_problems(df["embedding"], EMBEDDING_DIM)
        for text in problems.dropna().unique():
            flag(problems == text, text)
        flag(df.duplicated("item_id", keep="first"), "duplicate item_id")
    elif dataset == "users":
        flag(~df["language"].isin(LANGUAGES), "unknown language code")
        flag(df.duplicated("user_id", keep="first"), "duplicate user_id")
    elif dataset == "frames":  # optional keyframes: validated like items, and their item must exist
        flag(~np.isfinite(df["frame_ts"].astype("float64")) | (df["frame_ts"] < 0), "frame_ts not a finite offset >= 0")
        flag(df["image_uri"].isna() | (df["image_uri"].astype(str).str.strip() == ""), "image_uri missing")
        if known_items is not None:
            flag(~df["item_id"].isin(known_items), "unknown item_id")
        problems = _embedding_problems(df["embedding"], EMBEDDING_DIM)
        for text in problems.dropna().unique():
            flag(problems == text, text)
        flag(df.duplicated(["item_id", "frame_ts"], keep="first"), "duplicate (item_id, frame_ts)")
    return reason


def _embedding_text(value: Any) -> str | None:
    """Readable, bounded text of a rejected embedding (``[0.1, nan, ...]``), whatever its shape."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        text = str(np.asarray(value, dtype=np.float64).round(6).tolist())
    except (TypeError, ValueError):
        text = repr(value)
    return text[:2000]


def validate(dataset: str, df: pd.DataFrame, dt: date | str | None = None,
             known_items: np.ndarray | None = None, max_invalid_fraction: float = 0.5) -> ValidationResult:
    """Split ``df`` into contract-conforming rows and quarantined rows with a reason."""
    if dataset not in SCHEMAS:
        raise ContractError(f"unknown dataset {dataset!r}; expected one of {sorted(SCHEMAS)}")
    check_invalid_fraction(max_invalid_fraction)
    _check_columns(dataset, df)
    if len(df) == 0:
        raise ContractError(f"{dataset}: partition{f' {as_date(dt)}' if dt else ''} is empty (0 rows)")
    typed, cast_reasons = _coerce(dataset, df.reset_index(drop=True))
    reasons = _row_reasons(dataset, typed, as_date(dt) if dt is not None else None, known_items, cast_reasons)
    bad = reasons.notna()
    counts = {str(k): int(v) for k, v in reasons[bad].value_counts().sort_index().items()}
    if bad.mean() > max_invalid_fraction:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise ContractError(
            f"{dataset}: {int(bad.sum())} of {len(typed)} rows invalid "
            f"(more than {max_invalid_fraction:.0%}); nothing written. Reasons: {detail}"
        )
    valid = typed[~bad].reset_index(drop=True)
    for key in KEYS[dataset] + (["session_id"] if dataset == "events" else []):
        valid[key] = valid[key].astype(SCHEMAS[dataset][key])
    if dataset == "events":
        valid["completion"] = (valid["watch_time_s"] / valid["duration_s"]).astype("float64")
    if dataset in ("items", "frames"):
        valid["embedding"] = [np.asarray(v, dtype=np.float32) for v in valid["embedding"]]
    quarantine = df.reset_index(drop=True)[bad.to_numpy()].copy()
    quarantine = quarantine.astype({c: "string" for c in quarantine.columns if c != "embedding"})
    if "embedding" in quarantine:
        quarantine["embedding"] = quarantine["embedding"].map(_embedding_text).astype("string")
    quarantine["reason"] = reasons[bad].to_numpy()
    return ValidationResult(valid, quarantine, counts)


def check_invalid_fraction(value: Any) -> float:
    """``max_invalid_fraction`` must be a number in [0, 1]: NaN compares false and would let anything through."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        raise ContractError(f"max_invalid_fraction must be a number between 0 and 1, got {value!r}")
    return float(value)


def ingest(storage: Storage, dataset: str, dt: date | str, data: pd.DataFrame | Iterable[pd.DataFrame],
           known_items: np.ndarray | None = None, max_invalid_fraction: float = 0.5,
           buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
    """Validate and write one raw partition plus its quarantine sibling (one commit); return counts.

    ``data`` may be an iterable of blocks (split by key, e.g. by user for events) so large days stream
    through; each block is validated on its own, and a failing block aborts the write before commit.
    Events are written bucketed by user (``buckets`` per day, :mod:`recsys_notify.core.buckets`).
    """
    day = as_date(dt)
    if dataset not in RAW:
        raise ContractError(f"unknown dataset {dataset!r}; expected one of {sorted(RAW)}")
    check_invalid_fraction(max_invalid_fraction)
    if dataset in ("events", "frames") and known_items is None:
        items = resolve(storage, {"items": as_of(RAW["items"], day)})
        known_items = items.table("items", ["item_id"]).column("item_id").to_numpy()
    blocks = [data] if isinstance(data, pd.DataFrame) else data
    quarantined: list[pd.DataFrame] = []
    counts: dict[str, int] = {}

    def valid_blocks() -> Iterator[pd.DataFrame]:
        for block in blocks:
            result = validate(dataset, block, day if dataset == "events" else None, known_items, max_invalid_fraction)
            quarantined.append(result.quarantine)
            for reason, n in result.counts.items():
                counts[reason] = counts.get(reason, 0) + n
            yield bucketed(pa.Table.from_pandas(result.valid, preserve_index=False), buckets) \
                if dataset == "events" else result.valid
        if not quarantined:
            raise ContractError(f"{dataset}: partition {day} is empty (no blocks)")

    quarantine_name = QUARANTINE[dataset].name

    def quarantine_blocks() -> Iterator[pd.DataFrame]:
        yield pd.concat(quarantined, ignore_index=True)  # staged after the valid rows, so complete

    written = storage.write_many(day, {dataset: valid_blocks(), quarantine_name: quarantine_blocks()},
                                 dataset_metadata={"events": {"buckets": buckets}} if dataset == "events" else None)
    return {"rows": written[dataset].rows, "quarantined": written[quarantine_name].rows,
            "reasons": dict(sorted(counts.items()))}


def embedding_matrix(values: pd.Series, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """Stack an embedding column into a float32 (n, dim) matrix, refusing bad vectors by name."""
    if len(values) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    try:
        with np.errstate(over="ignore"):
            matrix = np.stack(values.to_numpy()).astype(np.float32, copy=False)
        if matrix.shape == (len(values), dim) and np.isfinite(matrix).all() and matrix.any(axis=1).all():
            return matrix
    except (ValueError, TypeError):
        pass
    problems = _embedding_problems(values, dim).dropna()
    if len(problems):
        raise ContractError(f"{len(problems)} embedding(s) invalid, first: {problems.iloc[0]} "
                            f"(row {problems.index[0]})")
    raise ContractError(f"embeddings cannot be stacked into ({len(values)}, {dim})")
