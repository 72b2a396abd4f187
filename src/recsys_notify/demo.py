"""``make demo``: a small synthetic world pushed through every DAG for one day, in-process.

Generates data under ``./data`` (unless it is already there), migrates a local Airflow metadata DB
under ``./.airflow``, then runs the six DAGs in dependency order with ``dag.test()`` for one date
and prints where the notifications are, a sample of them, and the commands to open MLflow and the
Airflow UI on the same data. Same code paths as production: the DAG files in ``dags/``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from recsys_notify.core.datasets import EVENTS, OUTBOX

REPO = Path(__file__).resolve().parents[2]

# Dependency order: pairs -> GEM embeddings -> user medoids -> global medoids; the two-tower champion
# is ready before notifications, which read both medoid datasets. Trigger params (the same ones the
# UI form offers) keep the two training DAGs to demo length; everything else runs as configured.
CHAIN: list[tuple[str, dict[str, Any]]] = [
    ("pair_mining", {}),
    ("gem", {"epochs": 3}),
    ("user_medoids", {}),
    ("global_medoids", {}),
    ("two_tower", {"experiment_overrides": {"epochs": 2}}),
    ("notifications", {}),
]


def airflow_env(home: Path, data_root: str) -> dict[str, str]:
    """The environment for an isolated local Airflow on this checkout's dags/ and plugins/."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "RECSYS__DATA_ROOT": data_root,
        "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    }


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def generate_if_missing(data_root: str, users: int, items: int, days: int, end: date | None) -> date:
    """Generate the world ending ``end`` (default: yesterday, UTC) unless the data root has one; return its end.

    A world is never mixed with another: an existing one is reused as it is (its newest day is the end),
    and an explicit ``end`` that does not match it is refused.
    """
    from recsys_notify.core.storage import Storage
    from recsys_notify.synthetic import default_end, generate, generator_config

    storage = Storage(data_root)
    have = storage.dates(EVENTS.name)
    if have:
        if end is not None and end != max(have):
            raise SystemExit(f"error: {data_root} holds a world ending {max(have)}, not {end}: "
                             "use another --data directory or delete this one")
        say(f"synthetic data already in {data_root} (events up to {max(have)}); reusing it")
        return max(have)
    end = end or default_end()
    say(f"generating {users} users, {items} items, {days} days ending {end} (UTC) into {data_root}")
    generate(storage, generator_config(users, items, days, end, 0), lambda msg: say(f"  generate: {msg}"))
    return end


def run_chain(day: date) -> dict[str, float]:
    """``dag.test()`` each DAG of the chain for ``day``; stop at the first failure with its task states."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    missing = [dag_id for dag_id, _ in CHAIN if dag_id not in bag.dags]
    if missing:
        raise SystemExit(f"DAGs missing from {REPO / 'dags'}: {missing}")
    timings = {}
    logical = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    for i, (dag_id, conf) in enumerate(CHAIN, 1):
        say(f"[{i}/{len(CHAIN)}] {dag_id} for {day}" + (f" with params {conf}" if conf else "") + " ...")
        start = time.monotonic()
        run = bag.dags[dag_id].test(logical_date=logical, run_conf=conf)
        timings[dag_id] = time.monotonic() - start
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        if run.state != "success":
            raise SystemExit(f"{dag_id} ended {run.state}; task states: {states}")
        say(f"[{i}/{len(CHAIN)}] {dag_id} succeeded in {timings[dag_id]:.0f}s")
    return timings


def report(data_root: str, day: date, sample: int = 5) -> None:
    from recsys_notify.core.config import get_settings
    from recsys_notify.core.storage import Storage

    settings = get_settings()
    storage = Storage(data_root)
    outbox = storage.read(OUTBOX.name, day)
    print()
    say(f"{len(outbox)} notifications for {day} in {storage.partition_path(OUTBOX.name, day)}")
    cols = [c for c in ("user_id", "item_id", "title", "body", "source") if c in outbox.columns]
    with_text = outbox[cols].head(sample).to_string(index=False, max_colwidth=60)
    print(with_text)
    print()
    print("MLflow UI (runs, metrics, registered models):")
    print(f"  .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000")
    print("Airflow UI on the same data (the DAG runs above are listed there; dates are UTC):")
    prefix = "" if data_root == str(REPO / "data") else f"RECSYS__DATA_ROOT={shlex.quote(data_root)} "
    print(f"  {prefix}make airflow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_notify.demo", description=__doc__)
    parser.add_argument("--data", default=str(REPO / "data"), help="data root (default ./data)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--end", type=date.fromisoformat, default=None,
                        help="last generated day (default: yesterday, UTC; the same --end gives the same world)")
    args = parser.parse_args(argv)
    data_root = str(Path(args.data).resolve())
    home = REPO / ".airflow"
    home.mkdir(exist_ok=True)
    os.environ.update(airflow_env(home, data_root))
    os.chdir(REPO)  # configs/ paths in settings are relative to the repository root

    started = time.monotonic()
    end = generate_if_missing(data_root, args.users, args.items, args.days, args.end)
    # The chain runs for the day before the last one, so notifications can be evaluated on next-day events.
    day = end - timedelta(days=1)
    say(f"migrating the Airflow metadata DB in {home}")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    timings = run_chain(day)
    report(data_root, day)
    say(f"done in {time.monotonic() - started:.0f}s (" + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
