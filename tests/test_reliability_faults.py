"""Faults at the storage and tracking layer: killed writers, concurrent writers, MLflow down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys_notify.core.storage import MissingPartitionError, PartitionLockedError
from tests import corruption as C
from tests.test_reliability_input import fingerprint

DAY = date(2026, 11, 14)
REPO = Path(__file__).resolve().parents[1]


def frame(rows: int, value: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.arange(rows, dtype=np.int64), "value": np.full(rows, value, dtype=np.int64)})


def test_writer_raising_mid_write_keeps_previous_partition(storage):
    storage.write("pairs", DAY, frame(100, 1))
    before = fingerprint(storage, "pairs", DAY)
    chunks = C.FailingChunks(frame(400, 2), chunks=4, fail_after=2)
    with pytest.raises(C.KillSimulated):
        storage.write("pairs", DAY, chunks)
    assert chunks.yielded == 2  # two chunks really were written to disk before the failure
    assert fingerprint(storage, "pairs", DAY) == before
    assert storage.read("pairs", DAY)["value"].tolist() == [1] * 100
    assert C.debris(storage, "pairs") == []
    storage.write("pairs", DAY, C.FailingChunks(frame(400, 2), chunks=4, fail_after=99))  # the retry
    out = storage.read("pairs", DAY)
    assert len(out) == 400 and set(out["value"]) == {2}
    assert C.debris(storage, "pairs") == []


def test_first_write_failing_leaves_no_partition(storage):
    with pytest.raises(C.KillSimulated):
        storage.write("pairs", DAY, C.FailingChunks(frame(40, 1), fail_after=1))
    assert storage.dates("pairs") == [] and not storage.exists("pairs", DAY)
    assert C.debris(storage, "pairs") == []
    with pytest.raises(MissingPartitionError, match="run the pair_mining DAG"):
        storage.read("pairs", DAY)


_SLOW_WRITER = """
import sys, time, numpy as np, pandas as pd, pyarrow as pa
from recsys_notify.core.storage import Storage
root, flag, release = sys.argv[1:4]
def chunks():
    for i in range(3):
        yield pa.table({"user_id": np.arange(50, dtype=np.int64), "value": np.full(50, 7, dtype=np.int64)})
        open(flag, "w").close()
        while release != "-" and not __import__("os").path.exists(release):
            time.sleep(0.02)
        if release == "-":
            time.sleep(3600)
Storage(root).write("pairs", "2026-11-14", chunks())
print("committed")
"""


def _start_writer(root: Path, tmp_path: Path, release: str = "-") -> tuple[subprocess.Popen, Path]:
    flag = tmp_path / f"flag-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(root), str(flag), release],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not flag.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "writer never started"
        time.sleep(0.02)
    return proc, flag


def test_process_killed_mid_write_then_retry_succeeds(storage, tmp_path):
    """SIGKILL (OOM killer, lost worker) mid-write: readers see the old partition, the retry is not locked out."""
    storage.write("pairs", DAY, frame(100, 1))
    before = fingerprint(storage, "pairs", DAY)
    proc, _ = _start_writer(Path(storage.root), tmp_path)
    assert C.debris(storage, "pairs")  # temp dir and lock exist while it writes ...
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert any(d.startswith("dt=20261114/v-") for d in C.debris(storage, "pairs"))  # ... and survive the kill
    # readers never see the debris
    assert storage.dates("pairs") == [DAY]
    assert fingerprint(storage, "pairs", DAY) == before
    # the retry (same host, dead holder) breaks the lock at once and cleans up
    storage.write("pairs", DAY, frame(30, 3))
    assert storage.read("pairs", DAY)["value"].tolist() == [3] * 30
    assert C.debris(storage, "pairs") == []


def test_kill_before_manifest_commit_leaves_previous_version(storage):
    """A writer killed after writing its files and a temp manifest, before the atomic manifest replace."""
    storage.write("pairs", DAY, frame(100, 1))
    before = fingerprint(storage, "pairs", DAY)
    target = storage.partition_path("pairs", DAY)
    storage.fs.makedirs(f"{target}/v-dead", exist_ok=True)
    frame(40, 2).to_parquet(f"{target}/v-dead/part-00000.parquet")
    with open(f"{target}/.manifest-dead.tmp", "w") as fh:
        fh.write('{"files": ["v-dead/part-00000.parquet"]')
    assert fingerprint(storage, "pairs", DAY) == before
    assert sorted(C.debris(storage, "pairs")) == ["dt=20261114/.manifest-dead.tmp", "dt=20261114/v-dead"]
    with pytest.raises(C.KillSimulated):  # a failed retry does not disturb the committed version either
        storage.write("pairs", DAY, C.FailingChunks(frame(40, 2), fail_after=1))
    assert fingerprint(storage, "pairs", DAY) == before
    storage.write("pairs", DAY, frame(40, 2))
    assert storage.read("pairs", DAY)["value"].tolist() == [2] * 40
    assert C.debris(storage, "pairs") == []


def test_concurrent_writer_process_fails_clearly(storage, tmp_path):
    """While another process holds the partition, a second writer gets PartitionLockedError naming it."""
    release = tmp_path / "release"
    proc, _ = _start_writer(Path(storage.root), tmp_path, str(release))
    message = rf"pairs dt=2026-11-14 is being written by another run \(host .*, pid {proc.pid}\); retry"
    with pytest.raises(PartitionLockedError, match=message):
        storage.write("pairs", DAY, frame(10, 9))
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "committed" in out
    got = storage.read("pairs", DAY)
    assert len(got) == 150 and set(got["value"]) == {7}
    storage.write("pairs", DAY, frame(10, 9))  # the loser's retry succeeds afterwards
    assert storage.read("pairs", DAY)["value"].tolist() == [9] * 10


def test_concurrent_writer_threads_one_wins_whole(storage):
    """Writers racing on one date: each either commits a complete partition or fails with PartitionLockedError."""
    start = threading.Barrier(4)
    outcomes: dict[int, str] = {}

    def write(value: int) -> None:
        def chunks():
            for _ in range(5):
                yield C.FailingChunks(frame(20, value), chunks=1, fail_after=99).parts[0]
                time.sleep(0.01)

        start.wait()
        try:
            storage.write("pairs", DAY, chunks())
            outcomes[value] = "committed"
        except PartitionLockedError:
            outcomes[value] = "locked"

    threads = [threading.Thread(target=write, args=(v,)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert "committed" in outcomes.values() and len(outcomes) == 4
    got = storage.read("pairs", DAY)
    assert len(got) == 100 and got["value"].nunique() == 1  # one writer's complete output, never a mix
    assert outcomes[int(got["value"].iloc[0])] == "committed"
    assert C.debris(storage, "pairs") == []


def test_readers_during_rewrites_see_complete_partitions(storage):
    """Repeated rewrites while a reader polls: every successful read is one whole version."""
    storage.write("pairs", DAY, frame(50, 0))
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                got = storage.read("pairs", DAY)
                seen.append((len(got), got["value"].nunique()))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for v in range(1, 30):  # a rewrite every few tens of milliseconds: far more churn than any real schedule
        storage.write("pairs", DAY, [pa.Table.from_pandas(frame(25, v))] * 2)
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=30)
    assert errors == []
    assert seen and all(s == (50, 1) for s in seen)


def test_tracking_unavailable_is_a_clear_error_and_data_survives(storage, settings_env, monkeypatch):
    from recsys_notify.core import tracking
    from recsys_notify.core.config import get_settings

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    settings_env(mlflow_tracking_uri="http://127.0.0.1:1")
    storage.write("pairs", DAY, frame(10, 1))  # data produced before tracking is touched
    started = time.monotonic()
    with pytest.raises(tracking.TrackingUnavailableError,
                       match=r"MLflow tracking store http://127.0.0.1:1 is unavailable.*retry the task"):
        with tracking.tracked_run("reliability", "down", params={"a": 1}, settings=get_settings()):
            pytest.fail("the body must not run without tracking")
    assert time.monotonic() - started < 30
    assert storage.read("pairs", DAY)["value"].tolist() == [1] * 10
    # once the store is back (here: the default SQLite store) the same call works
    monkeypatch.delenv("RECSYS__MLFLOW_TRACKING_URI")
    get_settings.cache_clear()
    with tracking.tracked_run("reliability", "back", params={"a": 1}, settings=get_settings()) as run:
        assert run.info.run_id
