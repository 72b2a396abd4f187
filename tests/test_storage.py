"""Partitioned storage: the same behaviour on a local root and on S3 (moto server on loopback)."""

from __future__ import annotations

import uuid
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys_notify.core.datasets import EVENTS, USER_MEDOIDS, lookup
from recsys_notify.core.inputs import as_of, between, day, newest, resolve, window
from recsys_notify.core.storage import (
    MissingPartitionError,
    PartitionLockedError,
    Storage,
    StorageError,
    as_date,
    date_range,
)
from tests.frames import upto

D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (random port) with one bucket."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="recsys-test")
    yield url
    server.stop()


def _s3_options(url: str) -> dict:
    return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"}}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "root"))
    url = request.getfixturevalue("s3_endpoint")
    s3 = Storage(f"s3://recsys-test/{uuid.uuid4().hex}", _s3_options(url))
    assert not s3.local
    return s3


def frame(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": np.arange(offset, offset + n, dtype=np.int64),
        "ts": pd.date_range("2026-11-01", periods=n, freq="min", tz="UTC"),
        "embedding": [np.full(4, i, dtype=np.float32) for i in range(n)],
    })


def test_roundtrip_layout_and_manifest(store):
    result = store.write("items", D1, frame(5), metadata={"source": "test"})
    assert result.rows == 5 and result.uri.endswith("/items/dt=20261101")
    back = store.read("items", "2026-11-01")
    pd.testing.assert_frame_equal(back.drop(columns="embedding"), frame(5).drop(columns="embedding"))
    assert np.stack(back["embedding"]).tolist() == np.stack(frame(5)["embedding"]).tolist()
    manifest = store.manifest("items", D1)
    assert manifest["rows"] == 5 and manifest["columns"] == ["item_id", "ts", "embedding"]
    assert manifest["metadata"] == {"source": "test"}
    assert all(f.startswith(store.partition_path("items", D1) + "/") for f in store.files("items", D1))
    assert store.read("items", D1, columns=["item_id"]).columns.tolist() == ["item_id"]


def test_embedding_floats_are_byte_stream_split_and_exact_on_every_reader(tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    store = Storage(str(tmp_path))
    special = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-308, 3.4e38, -1.5]
    table = pa.table({"item_id": np.arange(8, dtype=np.int64), "watch_time_s": np.array(special),
                      "embedding": pa.array([[v, -v] for v in np.array(special, np.float32)], pa.list_(pa.float32())),
                      "caption": ["a", "b"] * 4})
    store.write("items", D1, table)
    [path] = store.files("items", D1)
    chunks = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)}
    assert "BYTE_STREAM_SPLIT" in encodings["embedding.list.element"]
    assert all("RLE_DICTIONARY" in encodings[c] for c in ("item_id", "watch_time_s", "caption"))

    def bits(t: pa.Table) -> tuple[list[int], list[int]]:  # bit patterns: NaN and -0.0 compare exactly
        flat = pa.concat_arrays([c.flatten() for c in t.column("embedding").chunks])
        return (t.column("watch_time_s").to_numpy().view(np.int64).tolist(), flat.to_numpy().view(np.int32).tolist())

    back = store.read_table("items", D1)
    assert bits(back) == bits(table) and back.column("caption").to_pylist() == table.column("caption").to_pylist()
    query = f"SELECT watch_time_s, embedding FROM read_parquet('{path}') ORDER BY item_id"
    assert bits(duckdb.sql(query).to_arrow_table()) == bits(table)


def test_dates_exists_and_resolved_windows(store):
    for i, d in enumerate([D3, D1, D2]):
        store.write("events", d, frame(2, offset=10 * i))
    assert store.dates("events") == [D1, D2, D3]
    assert store.dates("nothing") == []
    assert store.exists("events", D2) and not store.exists("events", date(2026, 11, 4))
    inputs = resolve(store, {"w": window(EVENTS, D2, 2), "clipped": window(EVENTS, D2, 30),
                             "newest": newest(EVENTS, date(2026, 11, 30)), "on": newest(EVENTS, D2),
                             "all": as_of(EVENTS, date(2030, 1, 1))})
    assert sorted(inputs.frame("w")["item_id"]) == [10, 11, 20, 21]  # D1 holds offset 10, D2 offset 20
    assert inputs["clipped"].dates == [D1, D2] and inputs["clipped"].clipped and not inputs["w"].clipped
    assert inputs["newest"].dates == [D3] and inputs["on"].dates == [D2]
    assert len(inputs.frame("all")) == 6
    assert [r["dt"] for r in inputs.lineage() if r["role"] == "w"] == ["2026-11-01", "2026-11-02"]


def test_resolved_inputs_read_the_pinned_version(store):
    store.write("events", D1, frame(2))
    inputs = resolve(store, {"e": day(EVENTS, D1)})
    store.write("events", D1, frame(3, offset=100))  # replaced once: the pinned version is kept
    assert sorted(inputs.frame("e")["item_id"]) == [0, 1]
    store.write("events", D1, frame(1, offset=200))  # replaced twice: the pinned version is gone
    with pytest.raises(StorageError, match="events dt=2026-11-01 version .* was replaced while this run"):
        inputs.frame("e")
    with pytest.raises(StorageError, match="events dt=2026-11-01 version .* was replaced while this run"):
        list(store.iter_batches(inputs["e"].partitions[0], ["item_id"]))


def test_a_scan_in_batches_yields_every_row_of_the_pinned_version(store):
    store.write("events", D1, frame(50))
    inputs = resolve(store, {"e": day(EVENTS, D1)})
    store.write("events", D1, frame(3, offset=100))
    batches = list(store.iter_batches(inputs["e"].partitions[0], ["item_id", "ts"], rows=7))
    assert max(b.num_rows for b in batches) == 7 and batches[0].schema.names == ["item_id", "ts"]
    assert pa.Table.from_batches(batches).equals(inputs.table("e", ["item_id", "ts"]))


def test_missing_partition_errors_name_the_producer(store):
    store.write("events", D1, frame(1))
    store.write("events", D3, frame(1))
    with pytest.raises(MissingPartitionError) as err:
        store.read("events", D2)
    assert str(err.value) == ("events has no partition for 2026-11-02: run `recsys-notify generate` or "
                              "`recsys-notify ingest events` for 2026-11-02 first")
    with pytest.raises(MissingPartitionError, match=r"events is missing 1 day\(s\) of the window "
                                                    r"2026-11-01\.\.2026-11-03: 2026-11-02"):
        resolve(store, {"e": window(EVENTS, D3, 3)})
    assert len(resolve(store, {"e": between(EVENTS, D1, D3)}).frame("e")) == 2
    with pytest.raises(MissingPartitionError, match=r"user_medoids has no partition on or before 2026-11-03: "
                                                    r"run the user_medoids DAG \(`recsys-notify user-medoids`\)"):
        resolve(store, {"m": newest(USER_MEDOIDS, D3)})
    assert resolve(store, {"m": newest(USER_MEDOIDS, D3, required=False)})["m"].partitions == ()
    with pytest.raises(MissingPartitionError, match="items has no partition on or before 2026-11-01"):
        upto(store, "items", D1)


def test_dimension_rows_take_the_newest_partition(store):
    items = lookup("items")
    store.write("items", D1, pd.DataFrame({"item_id": [1, 2], "caption": ["old", "two"]}))
    store.write("items", D2, pd.DataFrame({"item_id": [1, 3], "caption": ["new", "three"]}))
    rows = resolve(store, {"i": as_of(items, D2)}).dimension("i", ["caption"], dt_column="from_dt")
    assert rows.to_dict("list") == {"caption": ["two", "new", "three"], "from_dt": [D1, D2, D2]}


def test_chunked_write_and_whole_replace(store):
    store.write("pairs", D1, (pa.Table.from_pandas(frame(3, offset=i * 3), preserve_index=False) for i in range(4)))
    assert len(store.files("pairs", D1)) == 4
    assert store.read("pairs", D1)["item_id"].tolist() == list(range(12))
    store.write("pairs", D1, frame(2, offset=100))
    assert store.read("pairs", D1)["item_id"].tolist() == [100, 101]
    assert len(store.files("pairs", D1)) == 1
    first = store.manifest("pairs", D1)["previous"]
    store.write("pairs", D1, frame(1, offset=200))
    leftovers = [p for p in store.fs.find(store.partition_path("pairs", D1)) if "part-" in p]
    assert len(leftovers) == 2  # current + the one it replaced (kept for readers still on it) ...
    assert not any(f"/{first}/" in p for p in leftovers)  # ... older versions are gone, not just unreferenced


def test_failed_write_keeps_old_partition_and_leaves_no_temp_files(store):
    store.write("events", D1, frame(3))
    before = sorted(store.fs.find(store.dataset_path("events")))

    def failing():
        yield pa.Table.from_pandas(frame(50, offset=1000), preserve_index=False)
        raise RuntimeError("writer died mid-way")

    with pytest.raises(RuntimeError, match="writer died mid-way"):
        store.write("events", D1, failing())
    assert store.read("events", D1)["item_id"].tolist() == [0, 1, 2]
    assert sorted(store.fs.find(store.dataset_path("events"))) == before  # no temp dir, version or lock left
    # a first write that fails leaves no partition at all
    with pytest.raises(RuntimeError):
        store.write("events", D2, failing())
    assert store.dates("events") == [D1]


def test_concurrent_writer_is_refused(store):
    with store._lock("events", D1):
        with pytest.raises(PartitionLockedError, match=r"events dt=2026-11-01 is being written by another run"):
            store.write("events", D1, frame(1))
    store.write("events", D1, frame(1))  # lock released afterwards
    assert store.exists("events", D1)


def test_local_lock_names_holder_and_stale_lock_is_broken(tmp_path):
    store = Storage(str(tmp_path / "root"))
    with store._lock("events", D1):
        with pytest.raises(PartitionLockedError, match=r"\(host .+, pid \d+\); retry when it finishes"):
            store.write("events", D1, frame(1))
        impatient = Storage(str(tmp_path / "root"), lock_stale_s=-1)  # treats every lock as abandoned
        impatient.write("events", D1, frame(2))
    assert len(store.read("events", D1)) == 2


def test_corrupt_file_is_reported(tmp_path):
    store = Storage(f"file://{tmp_path / 'root'}")
    store.write("items", D1, frame(2))
    path = store.files("items", D1)[0]
    with open(path, "wb") as fh:
        fh.write(b"not parquet")
    with pytest.raises(StorageError, match=r"corrupt Parquet file file://.*part-00000.parquet in items dt=2026-11-01"):
        store.read("items", D1)


def test_delete_and_invalid_names(store):
    store.write("events", D1, frame(1))
    store.delete("events", D1)
    assert store.dates("events") == []
    for bad in ["", "a/b", "_lock", ".hidden"]:
        with pytest.raises(ValueError, match="invalid dataset name"):
            store.write(bad, D1, frame(1))


def test_dates_parsing():
    assert as_date("2026-11-02") == as_date("20261102") == as_date(pd.Timestamp("2026-11-02T13:00Z")) == D2
    with pytest.raises(ValueError, match=r"not a date: '11/02/2026' \(expected YYYY-MM-DD\)"):
        as_date("11/02/2026")
    assert date_range(D1, D3) == [D1, D2, D3]
    with pytest.raises(ValueError, match="end 2026-11-01 is before start 2026-11-03"):
        date_range(D3, D1)


def test_partitions_committed_by_another_client_are_listed(store):
    """A long-lived reader (an Airflow worker) sees dates another process committed after it listed."""
    store.write("events", D1, frame(1))
    assert store.dates("events") == [D1]
    options = {} if store.local else {**store.fs.storage_options, "skip_instance_cache": True}
    other = Storage(store.root_uri, options)
    assert other.fs is not store.fs or store.local
    other.write("events", D2, frame(1))
    assert store.dates("events") == [D1, D2]
    store.files("events", D1)  # reader has seen D1's manifest ...
    other.write("events", D1, frame(3, offset=50))  # ... then another run rewrites it
    assert store.read("events", D1)["item_id"].tolist() == [50, 51, 52]


def test_s3_root_configured_through_settings_env(s3_endpoint):
    from recsys_notify.core.config import load_settings
    from recsys_notify.core.storage import storage_from_settings

    settings = load_settings(environ={
        "RECSYS__DATA_ROOT": f"s3://recsys-test/{uuid.uuid4().hex}",
        "RECSYS__STORAGE_OPTIONS__KEY": "testing",
        "RECSYS__STORAGE_OPTIONS__SECRET": "testing",
        "RECSYS__STORAGE_OPTIONS__CLIENT_KWARGS__ENDPOINT_URL": s3_endpoint,
        "RECSYS__STORAGE_OPTIONS__CLIENT_KWARGS__REGION_NAME": "us-east-1",
    })
    store = storage_from_settings(settings)
    assert not store.local
    assert store.write("events", D1, frame(2)).uri == f"{settings.data_root}/events/dt=20261101"
    assert store.read("events", D1)["item_id"].tolist() == [0, 1]


# ----- a step's outputs are one commit; locks cannot wedge -----

class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no cleanup (``finally`` blocks aside)."""


def _step_outputs(value: int) -> dict[str, pd.DataFrame]:
    return {name: pd.DataFrame({"value": np.full(3, value, dtype=np.int64)})
            for name in ("global_clusters", "global_medoids", "templates", "overrides")}


def _values(store: Storage) -> dict[str, set[int]]:
    return {name: set(store.read(name, D1)["value"]) for name in _step_outputs(0)}


def test_outputs_killed_between_manifests_are_all_visible(store, monkeypatch):
    store.write_many(D1, _step_outputs(1))
    publish, calls = Storage._publish, []

    def dies_after_two(self, staged):
        if len(calls) == 2:
            raise _Killed
        calls.append(staged)
        publish(self, staged)

    monkeypatch.setattr(Storage, "_publish", dies_after_two)
    with pytest.raises(_Killed):
        store.write_many(D1, _step_outputs(2))
    monkeypatch.setattr(Storage, "_publish", publish)
    assert _values(store) == {name: {2} for name in _step_outputs(0)}  # one run, never new clusters + old overrides
    assert [store.partition(n, D1).version for n in _step_outputs(0)] == \
        [store.manifest(n, D1)["version"] for n in _step_outputs(0)]
    store.write("templates", D1, pd.DataFrame({"value": np.full(3, 3, dtype=np.int64)}))  # next writer finishes it
    assert store._pending(D1) == []
    assert _values(store) == {"global_clusters": {2}, "global_medoids": {2}, "templates": {3}, "overrides": {2}}


def test_outputs_killed_before_the_record_are_all_old(store, monkeypatch):
    store.write_many(D1, _step_outputs(1))

    def dies(self, day, staged):
        raise _Killed

    monkeypatch.setattr(Storage, "_write_record", dies)
    with pytest.raises(_Killed):
        store.write_many(D1, _step_outputs(2))
    monkeypatch.undo()
    assert _values(store) == {name: {1} for name in _step_outputs(0)}
    store.write_many(D1, _step_outputs(2))
    assert _values(store) == {name: {2} for name in _step_outputs(0)}


def test_new_partitions_of_a_pending_record_are_listed(store, monkeypatch):
    monkeypatch.setattr(Storage, "_publish", lambda self, staged: (_ for _ in ()).throw(_Killed()))
    with pytest.raises(_Killed):
        store.write_many(D1, _step_outputs(2))
    monkeypatch.undo()
    assert store.dates("overrides") == [D1] and store.exists("overrides", D1)
    assert _values(store) == {name: {2} for name in _step_outputs(0)}


def test_empty_or_garbled_lock_is_judged_by_its_age(tmp_path):
    import os
    import time

    store = Storage(str(tmp_path / "root"))
    store.write("events", D1, frame(1))
    lock = tmp_path / "root" / "events" / ".lock-dt=20261101"
    lock.write_bytes(b"")  # what a writer killed between creating the lock and writing its holder left
    with pytest.raises(PartitionLockedError, match="unknown holder"):
        store.write("events", D1, frame(2))  # fresh: may be a holder about to write its record
    old = time.time() - 120
    os.utime(lock, (old, old))
    store.write("events", D1, frame(2))
    assert len(store.read("events", D1)) == 2 and not lock.exists()


def test_writer_failing_to_write_its_lock_leaves_none(tmp_path, monkeypatch):
    import errno
    import json

    store = Storage(str(tmp_path / "root"))

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.write("events", D1, frame(1))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "root" / "events").iterdir()] == []
    store.write("events", D1, frame(1))


def test_inputs_pinned_across_a_step_commit_come_from_one_run(store, monkeypatch):
    from recsys_notify.core.datasets import GLOBAL_CLUSTERS, OVERRIDES

    store.write_many(D1, _step_outputs(1))
    partition, committed = Storage.partition, []

    def commit_after_first_pin(self, dataset, dt):
        pinned = partition(self, dataset, dt)
        if not committed:  # another run commits all four outputs right after the first input was pinned
            committed.append(True)
            self.write_many(D1, _step_outputs(2))
        return pinned

    monkeypatch.setattr(Storage, "partition", commit_after_first_pin)
    inputs = resolve(store, {"clusters": day(GLOBAL_CLUSTERS, D1), "overrides": day(OVERRIDES, D1)})
    runs = {role: set(inputs.table(role, ["value"]).column("value").to_pylist()) for role in inputs}
    assert runs == {"clusters": {2}, "overrides": {2}}


def test_lock_is_exclusive_on_both_backends(store, monkeypatch):
    with store._lock("events", D1):
        monkeypatch.setattr(store.fs, "exists", lambda path: False)  # both writers checked before either wrote
        monkeypatch.setattr(store, "_break_stale_lock", lambda path: None)
        with pytest.raises(PartitionLockedError):
            with store._lock("events", D1):
                pass
        monkeypatch.undo()
    with store._lock("events", D1):  # released
        pass
