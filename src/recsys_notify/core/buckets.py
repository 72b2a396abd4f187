"""User buckets inside event partitions, so a shard of users reads only its share of each day.

Ingest (and so the generator) adds ``bucket = splitmix64(user_id) mod B`` to every events row,
writes each file sorted by bucket with one Parquet row group per bucket (see
:mod:`recsys_notify.core.storage`), and records ``B`` in the partition's manifest metadata
(``buckets``; the ``event_buckets`` setting). Shard ``s`` of ``n`` is the users with
``splitmix64(user_id) mod n == s`` whatever ``B`` is, so sharded results never depend on bucketing:

* ``n`` divides ``B``: the shard is exactly the buckets ``b`` with ``b mod n == s`` (1/n of the data read);
* ``n`` is a multiple of ``B``: it reads bucket ``s mod B`` (1/B) and keeps its users in memory;
* otherwise it reads the buckets ``b mod g == s mod g`` with ``g = gcd(n, B)`` and keeps its users.

Per-user step outputs (user medoids, outbox, delivery log and feedback) are written the same way
(:func:`by_user`), so a notification shard reads only its users' rows of them too.

Partitions written before bucketing (no ``bucket`` column) need no migration: they are read whole
and filtered by the same hash (same rows, the cost of a full scan); rewriting such a day through
``recsys-notify ingest`` buckets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_notify.core.hashing import splitmix64

if TYPE_CHECKING:
    from recsys_notify.core.storage import Partition, Storage

BUCKET = "bucket"
DEFAULT_BUCKETS = 64


def user_slot(user_ids: np.ndarray, n: int) -> np.ndarray:
    """Stable ``splitmix64(user_id) mod n`` (the bucket for ``n = B``, the shard for ``n`` shards)."""
    return (splitmix64(np.asarray(user_ids).astype(np.uint64)) % np.uint64(n)).astype(np.int64)


def bucketed(table: pa.Table, buckets: int, rows: np.ndarray | None = None) -> pa.Table:
    """``table`` with an int32 ``bucket`` column, rows stably sorted by it (one row group per bucket on write).

    ``rows`` (a permutation) is the order to sort stably from: the rows are copied once, not per ordering.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    bucket = user_slot(table.column("user_id").to_numpy(), buckets).astype(np.int32)
    if BUCKET in table.column_names:
        table = table.drop_columns([BUCKET])
    rows = np.arange(table.num_rows) if rows is None else rows
    order = rows[np.argsort(bucket[rows], kind="stable")]
    return table.take(order).append_column(BUCKET, pa.array(bucket[order]))


def by_user(data: pd.DataFrame | pa.Table, buckets: int, rows: np.ndarray | None = None
            ) -> tuple[pa.Table, dict[str, int]]:
    """A per-user output laid out like events (bucket column, one row group per bucket) and its manifest metadata.

    Readers of per-user datasets (user medoids, delivery logs) then read one shard's rows like events.
    ``rows``: as :func:`bucketed` takes it.
    """
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    return bucketed(table, buckets, rows), {"buckets": buckets}


def by_user_sorted(data: pd.DataFrame | pa.Table, order: Sequence[str], buckets: int
                   ) -> tuple[pa.Table, dict[str, int]]:
    """:func:`by_user` of ``data`` stably sorted by ``order``: a shard's output as :func:`merge_bucketed` takes it."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    return by_user(table, buckets, pc.sort_indices(table, [(c, "ascending") for c in order]).to_numpy())


def merge_bucketed(parts: Sequence[tuple[pa.Table, dict]], order: Sequence[str], buckets: int) -> pa.Table:
    """The shards' outputs (each a table and its manifest metadata) as :func:`by_user_sorted` lays out their union.

    A part written by :func:`by_user_sorted` with ``buckets`` is taken as it is (one written otherwise is laid
    out again). When every bucket is in one part (the shard count divides ``buckets``) the result is the
    parts' bucket slices in bucket order, and no row is copied; otherwise (shards sharing a bucket) the rows
    are sorted.
    """
    tables = [table if meta.get("buckets") == buckets and BUCKET in table.column_names
              else by_user_sorted(table, order, buckets)[0] for table, meta in parts]
    pieces = []
    for table in tables:
        bucket = table.column(BUCKET).to_numpy()
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        bounds = zip(np.r_[0, cuts], np.r_[cuts, len(bucket)])
        pieces += [(int(bucket[lo]), table.slice(lo, hi - lo)) for lo, hi in bounds if hi > lo]
    if len({b for b, _ in pieces}) == len(pieces):
        return pa.concat_tables([piece for _, piece in sorted(pieces, key=lambda p: p[0])] or tables[:1],
                                promote_options="default")  # an empty shard's columns may be typed null
    return by_user_sorted(pa.concat_tables(tables, promote_options="default"), order, buckets)[0]


def shard_buckets(shard: int, shards: int, buckets: int) -> list[int]:
    """The buckets holding shard ``shard`` of ``shards`` (every user of the shard is in one of them)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} out of range 0..{shards - 1}")
    g = gcd(shards, buckets)
    return [b for b in range(buckets) if b % g == shard % g]


def read_shard(storage: Storage, partition: Partition, columns: Sequence[str] | None, shard: int,
               shards: int) -> pa.Table:
    """The rows of users in shard ``shard`` of ``shards``, reading only their buckets' row groups."""
    wanted = list(columns or partition.columns)
    read = wanted if "user_id" in wanted else [*wanted, "user_id"]
    buckets = int(partition.metadata.get("buckets") or 0)
    if BUCKET in partition.columns and buckets:
        table = storage.read_partition(partition, read, filters=[(BUCKET, "in", shard_buckets(shard, shards, buckets))])
        if buckets % shards == 0:
            return table.select(wanted)  # the buckets are exactly the shard
    else:
        table = storage.read_partition(partition, read)  # written before bucketing: full scan
    keep = user_slot(table.column("user_id").to_numpy(), shards) == shard
    return table.filter(pa.array(keep)).select(wanted)
