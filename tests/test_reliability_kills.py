"""Fault injection: writers SIGKILLed at seeded random points of the commit protocol, then rerun.

Each writer is a forked child (storage already imported, so a kill costs milliseconds) that
commits one step's outputs for a date and SIGKILLs itself just before or after its k-th file-system
operation (lock link, Parquet file, manifest/record rename, removal). After every kill the parent checks
that readers see one run's outputs whole (the previous or the killed one, never a mix), reruns the
step, and checks that nothing is left locked or pending and that the outputs equal an undisturbed run's.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
from collections.abc import Callable
from datetime import date
from pathlib import Path

import fsspec.implementations.local
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_notify.core import storage as storage_module
from recsys_notify.core.contract import ingest
from recsys_notify.core.storage import Storage

DAY = date(2026, 11, 14)
SEED = 19
KILLS = 200  # across all steps

# each step's outputs for one date, as the step writes them (tiny frames; ``run`` tells the runs apart)
STEP_OUTPUTS = {
    "pair_mining": ["pair_interactions", "pair_items", "pair_items_quarantine", "pairs"],
    "global_medoids": ["global_clusters", "global_medoids", "templates", "overrides"],
    "notifications": ["outbox", "delivery_log", "delivery_feedback"],
    "gem": ["gem_embeddings"],
}


def _users(run: int) -> pd.DataFrame:
    languages = ["en", "es", "pt", "de"]
    return pd.DataFrame({
        "user_id": np.arange(6, dtype=np.int64) + 10 * run,
        "language": [languages[run % 4]] * 5 + ["xx"],  # the last row is quarantined
        "signup_ts": pd.to_datetime(["2026-11-01"] * 6, utc=True),
    })


def write_step(root: str, step: str, run: int) -> None:
    storage = Storage(root)
    if step == "ingest":
        ingest(storage, "users", DAY, _users(run))
        return
    storage.write_many(DAY, {name: pd.DataFrame({"run": np.full(4, run, dtype=np.int64), "i": np.arange(4)})
                             for name in STEP_OUTPUTS[step]})


def outputs(storage: Storage, step: str) -> dict[str, pd.DataFrame]:
    names = ["users", "users_quarantine"] if step == "ingest" else STEP_OUTPUTS[step]
    return {name: storage.read(name, DAY) for name in names}


def runs_seen(storage: Storage, step: str) -> set[int]:
    """Which run each visible output belongs to (a healthy store shows exactly one)."""
    seen = set()
    for name, frame in outputs(storage, step).items():
        if step != "ingest":
            seen |= set(frame["run"].tolist())
        elif name == "users":
            seen |= {int(u) // 10 for u in frame["user_id"]}
        else:
            seen |= {int(u) // 10 for u in frame["user_id"].astype(int)}
    return seen


_HOOKED: list[tuple[object, str]] = [(os, "link"), (os, "replace"), (os, "remove"), (pq, "write_table"),
                                     (storage_module, "_write_json"),
                                     (fsspec.implementations.local.LocalFileSystem, "rm")]


def _hook(on_op: Callable[[int, bool], None]) -> None:
    """Call ``on_op(index, before)`` around every file-system operation the commit protocol makes."""
    counter = [0]
    for owner, name in _HOOKED:
        real = getattr(owner, name)

        def wrapped(*args, _real=real, **kwargs):
            index = counter[0]
            counter[0] += 1
            on_op(index, True)
            out = _real(*args, **kwargs)
            on_op(index, False)
            return out

        setattr(owner, name, wrapped)


def _killed_writer(root: str, step: str, run: int, kill_at: int, before: bool) -> None:
    """Child: write one step's outputs, SIGKILLing itself at operation ``kill_at``."""

    def on_op(index: int, is_before: bool) -> None:
        if index == kill_at and is_before == before:
            os.kill(os.getpid(), signal.SIGKILL)

    _hook(on_op)
    write_step(root, step, run)


def _count_ops(root: str, step: str, run: int) -> int:
    ops: list[int] = []
    saved = [(owner, name, getattr(owner, name)) for owner, name in _HOOKED]
    try:
        _hook(lambda index, before: ops.append(index) if before else None)
        write_step(root, step, run)
    finally:
        for owner, name, real in saved:
            setattr(owner, name, real)
    return len(ops)


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.startswith(".lock-") or (p.is_file() and "_commits" in p.parts))


@pytest.mark.timeout(240)
def test_sigkilled_writers_never_show_a_mix_and_rerun_equals_undisturbed(tmp_path):
    ctx = multiprocessing.get_context("fork")  # storage already imported: a kill costs milliseconds
    rng = random.Random(SEED)
    steps = [*STEP_OUTPUTS, "ingest"]
    ops = {}
    for step in steps:  # undisturbed runs: the op count of an overwrite, and the reference outputs
        write_step(str(tmp_path / "count" / step), step, 0)
        ops[step] = _count_ops(str(tmp_path / "count" / step), step, 1)
    committed = {step: 0 for step in steps}
    kills = {step: 0 for step in steps}
    for step in steps:
        write_step(str(tmp_path / "killed" / step), step, 0)
    attempts = 0
    while sum(kills.values()) < KILLS:
        attempts += 1
        assert attempts < 3 * KILLS, f"too few writers died at their kill point: {kills}"
        step = steps[attempts % len(steps)]
        root = tmp_path / "killed" / step
        run = 2 if committed[step] == 1 else 1  # alternate two runs, so each has one undisturbed reference
        proc = ctx.Process(target=_killed_writer,
                           args=(str(root), step, run, rng.randrange(ops[step]), rng.random() < 0.5))
        proc.start()
        proc.join(60)
        assert proc.exitcode is not None, "writer hung"
        if proc.exitcode == -signal.SIGKILL:
            kills[step] += 1
        else:
            assert proc.exitcode == 0, f"{step} writer failed with exit code {proc.exitcode}"
        storage = Storage(str(root))
        seen = runs_seen(storage, step)
        assert seen in ({committed[step]}, {run}), f"{step}: readers see a mix of runs {seen} after a kill"
        write_step(str(root), step, run)  # the retry: must not be blocked by the dead writer's lock
        committed[step] = run
        assert _leftovers(root) == [], f"{step}: left locked or pending after the rerun"
        reference = tmp_path / "reference" / f"{step}-{run}"
        if not reference.exists():
            write_step(str(reference), step, run)
        for name, frame in outputs(storage, step).items():
            pd.testing.assert_frame_equal(frame, outputs(Storage(str(reference)), step)[name], obj=name)
    print(f"SIGKILLs per step: {kills}; writer runs: {attempts}")  # shown with pytest -s
    assert all(kills[step] >= KILLS // len(steps) // 2 for step in steps), kills
