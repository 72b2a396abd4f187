"""What a step run reads, resolved once at its start: role -> dataset -> committed partition versions.

A step declares its inputs as requests (:func:`window`, :func:`day`, :func:`as_of`, :func:`newest`,
:func:`between`) and :func:`resolve` pins each to the partition versions committed at that moment.
Every later read goes to exactly those files, so one run never mixes versions committed at
different moments, and :meth:`Inputs.lineage` is exactly what the run read (logged to MLflow).

The event window (:func:`window`) has one meaning everywhere: the ``days`` days ending at ``end``
(inclusive), clipped to the first day the dataset has; a missing day inside is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_notify.core.buckets import read_shard
from recsys_notify.core.datasets import Dataset
from recsys_notify.core.storage import MissingPartitionError, Partition, Storage, StorageError, as_date

Kind = Literal["window", "day", "as_of", "newest", "between"]


@dataclass(frozen=True)
class Request:
    """One input of a step: which partitions of ``dataset`` it needs (see the constructors below)."""

    dataset: Dataset
    kind: Kind
    start: date
    end: date
    required: bool = True


def window(dataset: Dataset, end: date | str, days: int) -> Request:
    """The ``days`` days ending at ``end``, clipped to the dataset's first day; a gap inside is an error."""
    if days < 1:
        raise ValueError(f"a window needs at least one day, got {days}")
    end = as_date(end)
    return Request(dataset, "window", end - timedelta(days=days - 1), end)


def day(dataset: Dataset, dt: date | str, required: bool = True) -> Request:
    """The partition of ``dt`` (absent and not required: nothing)."""
    return Request(dataset, "day", as_date(dt), as_date(dt), required)


def as_of(dataset: Dataset, dt: date | str, required: bool = True) -> Request:
    """Every partition up to ``dt`` (dimension data read with :meth:`Inputs.dimension`)."""
    return Request(dataset, "as_of", date.min, as_date(dt), required)


def newest(dataset: Dataset, dt: date | str, required: bool = True) -> Request:
    """The newest partition on or before ``dt`` (datasets refreshed less often than daily)."""
    return Request(dataset, "newest", date.min, as_date(dt), required)


def between(dataset: Dataset, start: date | str, end: date | str) -> Request:
    """Whatever partitions exist from ``start`` to ``end`` (inclusive; gaps allowed, may be none)."""
    return Request(dataset, "between", as_date(start), as_date(end), False)


def _dates(storage: Storage, request: Request) -> list[date]:
    ds, have = request.dataset, storage.dates(request.dataset.name)
    upto = [d for d in have if d <= request.end]
    if request.kind == "between":
        return [d for d in upto if d >= request.start]
    if request.kind == "day":
        if request.end in have:
            return [request.end]
        if request.required:
            raise MissingPartitionError(
                f"{ds.name} has no partition for {request.end}: run {ds.run_hint} for {request.end} first")
        return []
    if not upto:
        if not request.required:
            return []
        raise MissingPartitionError(
            f"{ds.name} has no partition on or before {request.end}: run {ds.run_hint} for {request.end} first")
    if request.kind == "newest":
        return [upto[-1]]
    if request.kind == "as_of":
        return upto
    start = max(request.start, upto[0])
    wanted = [start + timedelta(days=i) for i in range((request.end - start).days + 1)]
    missing = sorted(set(wanted) - set(upto))
    if missing:
        listed = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise MissingPartitionError(
            f"{ds.name} is missing {len(missing)} day(s) of the window {start}..{request.end}: {listed}. "
            f"Run {ds.run_hint} for those dates first")
    return wanted


@dataclass(frozen=True)
class Resolved:
    """The pinned partitions of one request."""

    request: Request
    partitions: tuple[Partition, ...]

    @property
    def dataset(self) -> Dataset:
        return self.request.dataset

    @property
    def dates(self) -> list[date]:
        return [p.dt for p in self.partitions]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    @property
    def clipped(self) -> bool:
        """A window that started later than asked because the data starts later."""
        return self.request.kind == "window" and bool(self.partitions) and self.partitions[0].dt > self.request.start


class Inputs(Mapping[str, Resolved]):
    """The resolved inputs of one run, by role; reads never look at storage listings again."""

    def __init__(self, storage: Storage, resolved: dict[str, Resolved]):
        self.storage = storage
        self._resolved = resolved

    def __getitem__(self, role: str) -> Resolved:
        return self._resolved[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolved)

    def __len__(self) -> int:
        return len(self._resolved)

    def tables(self, role: str, columns: list[str] | None = None, shard: tuple[int, int] | None = None,
               where: tuple[str, pa.Array] | None = None) -> Iterator[tuple[Partition, pa.Table]]:
        """Each pinned partition of ``role`` with its table (only ``columns``, checked against the manifest).

        ``shard=(s, n)``: only the rows of users in shard ``s`` of ``n``, read from their buckets
        (:func:`recsys_notify.core.buckets.read_shard`); ``where=(column, values)``: only rows whose
        ``column`` is in ``values`` (:meth:`Storage.read_partition`).
        """
        if shard is not None and where is not None:
            raise ValueError(f"{role}: read with shard= or where=, not both")
        resolved = self[role]
        for p in resolved.partitions:
            if columns is not None:
                resolved.dataset.check_columns(p.columns, columns, where=f"dt={p.dt}")
            if shard is None:
                yield p, self.storage.read_partition(p, columns, where=where)
            else:
                yield p, read_shard(self.storage, p, columns, *shard)

    def table(self, role: str, columns: list[str] | None = None, shard: tuple[int, int] | None = None) -> pa.Table:
        """All pinned partitions of ``role`` as one table (no rows: an empty table with ``columns``)."""
        tables = [t for _, t in self.tables(role, columns, shard)]
        if not tables:
            return pa.table({c: pa.array([], pa.null()) for c in columns or []})
        return pa.concat_tables(tables, promote_options="default")

    def frame(self, role: str, columns: list[str] | None = None, shard: tuple[int, int] | None = None
              ) -> pd.DataFrame:
        return self.table(role, columns, shard).to_pandas()

    def dimension(self, role: str, columns: list[str] | None = None, dt_column: str | None = None,
                  shard: tuple[int, int] | None = None, where: tuple[str, pa.Array] | None = None
                  ) -> pd.DataFrame:
        """:meth:`dimension_table` as a frame."""
        return self.dimension_table(role, columns, dt_column, shard, where).to_pandas()

    def dimension_table(self, role: str, columns: list[str] | None = None, dt_column: str | None = None,
                        shard: tuple[int, int] | None = None, where: tuple[str, pa.Array] | None = None
                        ) -> pa.Table:
        """Rows as of the date: an id listed in several partitions takes the newest partition's row.

        Rows stay in partition order (the row kept is the newest one, at its position); ``dt_column``
        adds the date of the partition each row came from; ``shard`` keeps one shard of users (a user
        dimension); ``where=(key column, values)`` keeps only those ids.
        """
        key = list(self[role].dataset.key)
        wanted = None if columns is None else list(dict.fromkeys(key + list(columns)))
        if where is not None and where[0] not in key:
            raise ValueError(f"{role}: where= filters a key column ({key}), not {where[0]!r}")
        tables = []
        for p, table in self.tables(role, wanted, shard, where):
            if dt_column:
                table = table.append_column(dt_column, pa.array([p.dt] * table.num_rows, pa.date32()))
            tables.append(table)
        if not tables:
            return self.table(role, wanted)
        table = pa.concat_tables(tables, promote_options="default")
        if len(tables) > 1 and table.num_rows:
            keep = last_rows(table, key)
            table = table if len(keep) == table.num_rows else table.take(keep)
        return table if columns is None else table.select(list(columns) + ([dt_column] if dt_column else []))

    def lineage(self) -> list[dict[str, Any]]:
        """One record per partition read: role, dataset, date, committed version, rows, location."""
        return [{"role": role, "dataset": r.dataset.name, "dt": p.dt.isoformat(), "version": p.version,
                 "rows": p.rows, "uri": self.storage.uri(self.storage.partition_path(p.dataset, p.dt))}
                for role, r in self._resolved.items() for p in r.partitions]

    def summary(self) -> dict[str, list[str]]:
        """Role -> partition dates read (short enough for a step result)."""
        return {role: [d.isoformat() for d in r.dates] for role, r in self._resolved.items()}


def last_rows(table: pa.Table, key: list[str]) -> np.ndarray:
    """Positions, ascending, of the last row of each distinct ``key`` (``drop_duplicates(keep="last")``)."""
    rows = table.select(key).append_column("_row", pa.array(np.arange(table.num_rows)))
    return np.sort(rows.group_by(key, use_threads=False).aggregate([("_row", "max")]).column("_row_max").to_numpy())


class StaleInputError(MissingPartitionError):
    """The newest partition of an input is older than the step accepts (its fresh partition is missing)."""


def check_fresh(inputs: Inputs, step: str, dt: date, max_age_days: int, setting: str) -> None:
    """Fail when a required "newest" input's partition is more than ``max_age_days`` before ``dt``.

    Without it a refresh silently recomputes last month's data and commits it as ``dt``'s.
    """
    for r in inputs.values():
        if r.request.kind != "newest" or not r.request.required or not r.partitions:
            continue
        have = r.dates[-1]
        age = (dt - have).days
        if age > max_age_days:
            raise StaleInputError(
                f"{step} for {dt}: the newest {r.dataset.name} partition is {have}, {age} days old "
                f"(limit {setting} = {max_age_days}); run {r.dataset.run_hint} for {dt} first, or raise {setting}")


RESOLVE_ATTEMPTS = 8


def _pin(storage: Storage, requests: Mapping[str, Request]) -> dict[str, Resolved]:
    resolved = {}
    for role, request in requests.items():
        dates = _dates(storage, request)
        resolved[role] = Resolved(request, tuple(storage.partition(request.dataset.name, d) for d in dates))
    return resolved


def resolve(storage: Storage, requests: Mapping[str, Request]) -> Inputs:
    """Pin every request to the partitions committed now; a required input that is missing fails here.

    The inputs are pinned one after another, so a step commit landing in between (new clusters, old
    overrides) would mix two runs: they are pinned again until two passes agree, which means every
    pinned version was current at one moment (versions are unique and never come back).
    """
    resolved = _pin(storage, requests)
    for _ in range(RESOLVE_ATTEMPTS):
        again = _pin(storage, requests)
        if again == resolved:
            return Inputs(storage, resolved)
        resolved = again
    raise StorageError(f"inputs {', '.join(requests)} were recommitted {RESOLVE_ATTEMPTS} times while being "
                       "pinned; retry the step")
