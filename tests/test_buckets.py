"""Events bucketed by user: one row group per bucket, a shard reads only its buckets, results as unbucketed."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_notify.core import buckets
from recsys_notify.core.config import Settings
from recsys_notify.core.storage import Storage
from recsys_notify.synthetic import GeneratorConfig, generate
from recsys_notify.user_medoids.step import compute_shard

END = date(2026, 11, 14)
B = 8


@pytest.fixture(scope="module")
def bucketed_world(tmp_path_factory) -> Storage:
    storage = Storage(str(tmp_path_factory.mktemp("bucketed") / "data"))
    generate(storage, GeneratorConfig(users=400, items=300, days=3, end=END, seed=3, buckets=B))
    return storage


@pytest.fixture(scope="module")
def legacy_world(bucketed_world, tmp_path_factory) -> Storage:
    """The same events rewritten as before bucketing: no bucket column, no bucket count."""
    storage = Storage(str(tmp_path_factory.mktemp("legacy") / "data"))
    for name in ("items", "users"):
        for d in bucketed_world.dates(name):
            storage.write(name, d, bucketed_world.read_table(name, d))
    for d in bucketed_world.dates("events"):
        storage.write("events", d, bucketed_world.read_table("events", d).drop_columns([buckets.BUCKET]))
    return storage


def test_events_files_hold_one_row_group_per_bucket(bucketed_world):
    p = bucketed_world.partition("events", END)
    assert p.metadata["buckets"] == B and buckets.BUCKET in p.columns
    meta = pq.ParquetFile(p.files[0]).metadata
    col = p.columns.index(buckets.BUCKET)
    ranges = [(meta.row_group(i).column(col).statistics.min, meta.row_group(i).column(col).statistics.max)
              for i in range(meta.num_row_groups)]
    assert ranges == [(b, b) for b in range(B)]
    table = bucketed_world.read_partition(p, ["user_id", buckets.BUCKET])
    assert (buckets.user_slot(table.column("user_id").to_numpy(), B) == table.column(buckets.BUCKET).to_numpy()).all()


@pytest.mark.parametrize("shards", [2, 4, 8, 16, 3])
def test_a_shard_reads_only_its_buckets_and_gets_exactly_its_users(bucketed_world, legacy_world, monkeypatch,
                                                                   shards):
    p, old = bucketed_world.partition("events", END), legacy_world.partition("events", END)
    full = bucketed_world.read_partition(p, ["user_id", "item_id"]).to_pandas()
    slot = buckets.user_slot(full["user_id"].to_numpy(), shards)
    read_rows = []
    original = Storage.read_partition

    def counting(self, partition, columns=None, filters=None):
        table = original(self, partition, columns, filters)
        read_rows.append(table.num_rows)
        return table

    monkeypatch.setattr(Storage, "read_partition", counting)
    for shard in range(shards):
        read_rows.clear()
        got = buckets.read_shard(bucketed_world, p, ["user_id", "item_id"], shard, shards).to_pandas()
        pd.testing.assert_frame_equal(got, full[slot == shard].reset_index(drop=True))
        in_buckets = buckets.user_slot(full["user_id"].to_numpy(), B)
        wanted = set(buckets.shard_buckets(shard, shards, B))
        assert read_rows == [int(pd.Series(in_buckets).isin(wanted).sum())]  # only those row groups came off disk
        if B % shards == 0:
            assert read_rows == [len(got)]
        # written before bucketing: read whole, same rows
        pd.testing.assert_frame_equal(buckets.read_shard(legacy_world, old, ["user_id", "item_id"], shard, shards)
                                      .to_pandas(), got)


def test_sharded_medoids_are_identical_on_bucketed_and_unbucketed_events(bucketed_world, legacy_world):
    settings = Settings(data_root=bucketed_world.root)
    settings.user_medoids.window_days = 3
    for shard, shards in ((1, 4), (2, 3)):
        new, new_stats, _ = compute_shard(bucketed_world, settings, END, shard, shards)
        old, old_stats, _ = compute_shard(legacy_world, settings, END, shard, shards)
        assert len(new) > 0 and new_stats == old_stats
        pd.testing.assert_frame_equal(new, old)
    whole, _, _ = compute_shard(bucketed_world, settings, END, 0, 1)
    parts = pd.concat([compute_shard(bucketed_world, settings, END, s, 4)[0] for s in range(4)])
    pd.testing.assert_frame_equal(parts.sort_values(["user_id", "rank"]).reset_index(drop=True), whole)


@pytest.mark.parametrize("shards", [1, 2, 3, 8, 16])
def test_merged_shard_outputs_equal_the_layout_of_their_sorted_union(shards):
    """Shards dividing B take the zero-copy path, others (3, 16 with B = 8) the sort; a part written without
    the layout (no bucket column) is laid out again. Every way gives by_user_sorted of the union."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(shards)
    users = rng.integers(0, 500, 3000)
    rows = pa.table({"user_id": users, "rank": rng.integers(1, 4, 3000), "value": rng.random(3000)})
    want = buckets.by_user_sorted(rows, ["user_id", "rank"], B)[0]
    slot = buckets.user_slot(users, shards)
    parts = []
    for s in range(shards):
        part = rows.filter(pa.array(slot == s))
        laid = s % 2 == 0  # odd shards come as an older writer left them: unsorted, no bucket
        parts.append((buckets.by_user_sorted(part, ["user_id", "rank"], B)[0], {"buckets": B}) if laid
                     else (part, {}))
    got = buckets.merge_bucketed(parts, ["user_id", "rank"], B)
    assert got.equals(want)
    if B % shards == 0 and all(meta for _, meta in parts):
        assert got.column("value").num_chunks > 1  # assembled from the parts' slices, not copied
