"""Run one SQL text on DuckDB (default, embedded, spills to disk) or Spark (local, cluster, Connect).

SQL lives in ``recsys_notify/sql/<module>.sql`` as named statements, each introduced by a
``-- name: <statement>`` line. Statements use the dialect DuckDB and Spark share (``CAST(x AS
STRING)``, ``md5``, ``bool_or``, ``count(CASE ...)``, window functions; no ``::`` casts) and
``:param`` markers. Values are always bound by the engine, never formatted into the text: Spark
takes ``:param`` natively, DuckDB gets the same markers rewritten to ``$param``.

Typical use::

    with open_engine("duckdb") as eng:
        eng.register_partitions("events", storage, inputs["events"].partitions, ["user_id", "item_id"])
        eng.materialize("per_user", queries["per_user"], {"min_events": 3})
        table = eng.query(queries["top_users"], {"k": 10})
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from recsys_notify.core.datasets import lookup
from recsys_notify.core.storage import Partition, Storage

EngineKind = Literal["duckdb", "spark"]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
_HEADER = re.compile(r"^--\s*name:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")


@lru_cache(maxsize=None)
def load_queries(module: str) -> dict[str, str]:
    """Named statements of ``sql/<module>.sql`` (comment lines dropped, so ``:`` in prose is safe)."""
    text = (Path(__file__).parent / "sql" / f"{module}.sql").read_text()
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        header = _HEADER.match(line.strip())
        if header:
            current = queries.setdefault(header.group(1), [])
        elif current is not None and not line.strip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip().rstrip(";") for name, lines in queries.items()}


def bind(sql: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The subset of ``params`` the statement references; a referenced but missing one is an error."""
    params = params or {}
    used = set(_PARAM.findall(sql))
    missing = sorted(used - set(params))
    if missing:
        raise ValueError(f"SQL parameter(s) not given: {', '.join(missing)}")
    return {k: params[k] for k in sorted(used)}


def _check_name(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"invalid table name {name!r}")
    return name


class SqlEngine(ABC):
    """Tables registered or materialized by name, queried with bound parameters, results as Arrow."""

    kind: EngineKind

    def register_partitions(self, name: str, storage: Storage, partitions: Sequence[Partition],
                            columns: Sequence[str] | None = None) -> int:
        """Expose pinned partitions (of one dataset) as table ``name``; returns their row count."""
        if not partitions:
            raise ValueError(f"no partitions given for table {name}")
        for p in partitions:
            lookup(p.dataset).check_columns(p.columns, columns or [], where=f"dt={p.dt}")
        self._register_files(_check_name(name), storage, partitions, list(columns) if columns else None)
        return sum(p.rows for p in partitions)

    @abstractmethod
    def _register_files(self, name: str, storage: Storage, partitions: Sequence[Partition],
                        columns: list[str] | None) -> None: ...

    @abstractmethod
    def register_table(self, name: str, data: pa.Table | pd.DataFrame) -> None:
        """Expose an in-memory table as ``name``."""

    @abstractmethod
    def materialize(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Compute ``sql`` once and keep it as table ``name`` for later statements."""

    def materialize_sliced(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Materialize ``sql`` once per ``:slice`` in ``range(:slices)`` and keep the union as ``name``.

        For aggregations too big to run well at once; ``sql`` must split its input by the two
        parameters so that the slices partition it. One slice here: engines that gain from more
        override this.
        """
        self.materialize(name, sql, {**(params or {}), "slice": 0, "slices": 1})

    @abstractmethod
    def query(self, sql: str, params: Mapping[str, Any] | None = None, order_by: Sequence[str] = ()) -> pa.Table:
        """Run ``sql`` and return the result as an Arrow table, sorted ascending by ``order_by`` if given."""

    def close(self) -> None:  # noqa: B027 - engines without resources need nothing
        """Release temporary tables and files (a shared Spark session itself stays up)."""

    def __enter__(self) -> SqlEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DUCKDB_SLICES = 16


class DuckDBEngine(SqlEngine):
    """In-process DuckDB; intermediate tables spill to a private temp directory beyond ``memory_limit``."""

    kind: EngineKind = "duckdb"

    def __init__(self, memory_limit: str | None = None, threads: int | None = None):
        import duckdb

        self._tmp = tempfile.mkdtemp(prefix="recsys-duckdb-")
        config: dict[str, Any] = {"temp_directory": self._tmp, "preserve_insertion_order": False}
        if memory_limit:
            config["memory_limit"] = memory_limit
        if threads:
            config["threads"] = threads
        self.con = duckdb.connect(":memory:", config=config)
        self._keep: list[Any] = []  # registered Arrow objects must outlive their views

    def _register_files(self, name: str, storage: Storage, partitions: Sequence[Partition],
                        columns: list[str] | None) -> None:
        if storage.local:
            rel = self.con.read_parquet([f for p in partitions for f in p.files], union_by_name=True)
            if columns:
                rel = rel.select(*columns)
            rel.create_view(name, replace=True)
        else:
            tables = [storage.read_partition(p, columns) for p in partitions]
            self.register_table(name, pa.concat_tables(tables, promote_options="default"))

    def register_table(self, name: str, data: pa.Table | pd.DataFrame) -> None:
        self._keep.append(data)
        self.con.register(_check_name(name), data)

    def materialize(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE {_check_name(name)} AS {self._text(sql)}", bind(sql, params))

    def materialize_sliced(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        # DuckDB aggregates several smaller hash tables faster than one huge one (the benchmark's
        # positive pair counts, 30M groups: 3.6 s in 16 slices vs 5.2 s at once on 2 cores)
        for part in range(_DUCKDB_SLICES):
            sliced = {**(params or {}), "slice": part, "slices": _DUCKDB_SLICES}
            if part == 0:
                self.materialize(name, sql, sliced)
            else:
                self.con.execute(f"INSERT INTO {_check_name(name)} {self._text(sql)}", bind(sql, sliced))

    def query(self, sql: str, params: Mapping[str, Any] | None = None, order_by: Sequence[str] = ()) -> pa.Table:
        result = self.con.sql(self._text(sql), params=bind(sql, params))
        if order_by:
            result = result.order(", ".join(map(_check_name, order_by)))
        return result.to_arrow_table()

    @staticmethod
    def _text(sql: str) -> str:
        return _PARAM.sub(r"$\1", sql)

    def close(self) -> None:
        self.con.close()
        self._keep.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)


_LOCAL = re.compile(r"^local(?:\[(\*|\d+)(?:,\s*\d+)?\])?$")


def local_defaults(master: str) -> dict[str, str]:
    """Settings for a ``local[N]`` master (none for a cluster): Spark's defaults are sized for clusters.

    200 shuffle partitions on N cores are 200 tiny tasks per stage, each with its own scheduling and
    codegen'd setup; 2 per core keep both cores busy with a few large tasks. AQE coalesces what is
    still small. One JVM holds every cached table, so it gets a driver heap above the 1g default.
    On a few cores the default G1 collector's concurrent threads take CPU from the tasks, and
    compressing cached tables costs more than they save in one machine's memory: the parallel
    collector and plain cached columns took pair mining at 100k users from 58-68 s to 48-51 s.
    """
    match = _LOCAL.match(master.strip())
    if not match:
        return {}
    threads = match.group(1)  # plain "local" is one thread, "local[*]" one per core
    cores = 1 if threads is None else (os.cpu_count() or 1) if threads == "*" else int(threads)
    return {
        "spark.sql.shuffle.partitions": str(2 * cores),
        "spark.default.parallelism": str(cores),
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.adaptive.coalescePartitions.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": "4g",
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
    }


class SparkEngine(SqlEngine):
    """PySpark: ``local[*]``, a cluster master, whatever spark-submit set up, or Spark Connect (``remote``)."""

    kind: EngineKind = "spark"

    def __init__(self, master: str | None = "local[*]", remote: str | None = None,
                 conf: Mapping[str, str] | None = None):
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.appName("recsys-notify")
        defaults: dict[str, str] = {"spark.sql.session.timeZone": "UTC"}
        if remote:
            builder = builder.remote(remote)
        elif master:
            builder = builder.master(master)
            defaults |= local_defaults(master)
        for key, value in {**defaults, **(conf or {})}.items():
            builder = builder.config(key, value)
        self.spark = builder.getOrCreate()
        self._views: list[str] = []
        self._cached: list[Any] = []

    def _register_files(self, name: str, storage: Storage, partitions: Sequence[Partition],
                        columns: list[str] | None) -> None:
        paths = [f for p in partitions for f in p.files]
        if not storage.local:
            paths = [re.sub(r"^s3://", "s3a://", storage.uri(p)) for p in paths]
        frame = self.spark.read.parquet(*paths)
        self._view(name, frame.select(*columns) if columns else frame)

    def register_table(self, name: str, data: pa.Table | pd.DataFrame) -> None:
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        self._view(_check_name(name), self.spark.createDataFrame(table))

    def materialize(self, name: str, sql: str, params: Mapping[str, Any] | None = None) -> None:
        frame = self.spark.sql(sql, args=bind(sql, params)).cache()
        self._cached.append(frame)
        self._view(_check_name(name), frame)

    def query(self, sql: str, params: Mapping[str, Any] | None = None, order_by: Sequence[str] = ()) -> pa.Table:
        # sorted in Arrow once collected: an ORDER BY would add a sampling job and a range shuffle
        # (the result comes to this process whole either way; DuckDB sorts faster itself)
        table = self.spark.sql(sql, args=bind(sql, params)).toArrow()
        return table.sort_by([(key, "ascending") for key in order_by]) if order_by else table

    def _view(self, name: str, frame: Any) -> None:
        frame.createOrReplaceTempView(name)
        self._views.append(name)

    def close(self) -> None:
        for frame in self._cached:
            frame.unpersist()
        for name in self._views:
            self.spark.catalog.dropTempView(name)
        self._cached.clear()
        self._views.clear()


def open_engine(kind: EngineKind, *, spark_master: str | None = "local[*]", spark_remote: str | None = None,
                spark_conf: Mapping[str, str] | None = None, duckdb_memory_limit: str | None = None,
                duckdb_threads: int | None = None) -> SqlEngine:
    """An engine of ``kind``; pass the settings section's engine fields as keywords."""
    if kind == "duckdb":
        return DuckDBEngine(duckdb_memory_limit, duckdb_threads)
    if kind == "spark":
        return SparkEngine(spark_master, spark_remote, spark_conf)
    raise ValueError(f"unknown SQL engine {kind!r}; expected 'duckdb' or 'spark'")
