"""End to end on the native production topology (``python -m recsys_notify.stack up``, i.e. ``make stack``).

PostgreSQL, Redis, moto's S3 server, the MLflow server and Airflow with two Celery workers run on
free 127.0.0.1 ports with state in a temporary STACK_DIR; the data root is the S3 bucket. The tests
run in file order and build on each other: the whole chain for two dates through the REST API (outputs
in S3 only, one outbox row per eligible user, shards on both workers, MLflow runs on the server with
artifacts in S3, no ERROR lines or repeated warnings in successful tasks) -> a 2-date ``user_medoids``
backfill (4 shards) with one Celery worker SIGKILLed mid-run -> an ops override for the newest day.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from recsys_notify.stack.config import PORTS, REPO, WORKERS, StackConfig, create_env_file
from recsys_notify.stack.procs import Procs
from tests.airflow_stack import AirflowApi, free_port
from tests.frames import upto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

# DAG ids in chain order (the one line to change when a DAG is renamed).
CHAIN = (PAIRS, GEM, USER_MEDOIDS, GLOBAL_MEDOIDS, TWO_TOWER, NOTIFICATIONS) = (
    "pair_mining", "gem", "user_medoids", "global_medoids", "two_tower", "notifications")
END = date(2026, 11, 14)  # last generated day
DATES = [END - timedelta(days=2), END - timedelta(days=1)]  # the chain's dates (next-day events exist)
WORLD = {"users": 300, "items": 900, "days": 10, "seed": 3}
SHARDS = 4
SETTINGS_ENV = {
    "RECSYS__GLOBAL_MEDOIDS__K": "12",
    "RECSYS__USER_MEDOIDS__SHARDS": str(SHARDS),
    "RECSYS__GEM__EPOCHS": "2",
    # Only manual runs and backfills (no wall-clock runs for dates this world has no data for); a killed
    # worker's task is declared dead after 30 s instead of 5 min.
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
}
CONF = {TWO_TOWER: {"experiments": ["dedup_user_history"], "experiment_overrides": {"epochs": 1}}}
OUTPUTS = ["pairs", "gem_embeddings", "user_medoids", "global_medoids", "templates", "outbox", "delivery_log"]
EXPERIMENTS = ["pair_mining", "gem", "user_medoids", "global_medoids", "two_tower", "notifications"]
LOCAL_OUTPUT = (".parquet", "_manifest.json", "mlflow.db")

_MISSING = [b for b in ("redis-server",) if not shutil.which(b)]
if _MISSING and not os.environ.get("CI"):
    pytestmark.append(pytest.mark.skip(reason=f"not installed: {_MISSING} (.ci/run installs it)"))


def iso(day: date) -> str:
    return day.isoformat()


class StackApi(AirflowApi):
    def __init__(self, config: StackConfig) -> None:
        super().__init__(config.url("AIRFLOW_PORT"), config.values["AIRFLOW_ADMIN_PASSWORD"])
        self.config = config

    def logs(self, lines: int = 40) -> str:
        out = []
        for log in sorted((self.config.root / "logs").glob("*.log")):
            out.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


def _stack_cli(env: dict[str, str], command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recsys_notify.stack", command], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def started() -> float:
    return time.time()


@pytest.fixture(scope="module")
def stack_env(started) -> dict[str, str]:
    # Not under pytest's 0700 tmp folder: PostgreSQL runs as the 'postgres' user when we are root.
    root = Path(tempfile.mkdtemp(prefix="recsys-stack-"))
    root.chmod(0o755)
    env_file = root / "stack.env"
    create_env_file(env_file)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    yield base | {"STACK_ENV_FILE": str(env_file), "STACK_DIR": str(root / "state"),
                  **{key: str(free_port()) for key in PORTS}, **SETTINGS_ENV}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def config(stack_env) -> StackConfig:
    return StackConfig.load(stack_env)


@pytest.fixture(scope="module")
def stack(stack_env, config):
    t0 = time.monotonic()
    up = _stack_cli(stack_env, "up", timeout=900)
    try:
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        print(f"stack up in {time.monotonic() - t0:.0f}s")
        api = StackApi(config)
        api.wait(lambda: set(CHAIN) <= api.dag_ids(), time.monotonic() + 300, "the DAGs to be parsed")
        yield api
    finally:
        recorded = Procs(config.root).recorded()
        t0 = time.monotonic()
        down = _stack_cli(stack_env, "down", timeout=300)
        print(f"stack down in {time.monotonic() - t0:.0f}s\n{down.stdout}{down.stderr}")
    # Everything it started is gone (a killed worker's pid file included), and nothing is left recorded.
    assert down.returncode == 0 and not [s.name for s in recorded if s.alive()]
    assert not Procs(config.root).recorded()


@pytest.fixture(scope="module")
def storage(config, stack):
    from recsys_notify.core.storage import Storage
    from recsys_notify.synthetic import generate, generator_config

    s3 = config.s3_env()
    store = Storage(f"s3://{config.values['S3_DATA_BUCKET']}/recsys",
                    {"client_kwargs": {"endpoint_url": s3["AWS_ENDPOINT_URL_S3"]}, "key": s3["AWS_ACCESS_KEY_ID"],
                     "secret": s3["AWS_SECRET_ACCESS_KEY"]})
    generate(store, generator_config(WORLD["users"], WORLD["items"], WORLD["days"], END, WORLD["seed"]))
    return store


@pytest.fixture(scope="module")
def chain_runs(stack, storage) -> dict[tuple[str, date], dict]:
    runs = {}
    for day in DATES:
        for dag_id in CHAIN:
            stack.unpause(dag_id)  # a paused DAG's manual runs stay queued
            runs[dag_id, day] = stack.run(dag_id, iso(day), CONF.get(dag_id), timeout=900)
            if dag_id in (GEM, NOTIFICATIONS):  # asset-driven: else upstream assets of the next date queue runs
                stack.unpause(dag_id, paused=True)
    return runs


def _backfill_runs(stack: StackApi) -> list[dict]:
    return [r for r in stack.runs(USER_MEDOIDS) if r["run_type"] == "backfill"]


def _compute_shards(stack: StackApi, run_id: str) -> list[dict]:
    return [ti for ti in stack.task_instances(USER_MEDOIDS, run_id) if ti["task_id"] == "compute_shard"]


def test_whole_chain_for_two_dates_writes_every_output_to_s3(chain_runs, storage, config, started):
    for day in DATES:
        for dataset in OUTPUTS:
            assert storage.exists(dataset, day), f"{dataset} missing for {day}"
    keys = {o["Key"] for o in _s3_objects(config, config.values["S3_DATA_BUCKET"])}
    assert any(f"recsys/outbox/dt={DATES[1]:%Y%m%d}/_manifest.json" == k for k in keys)
    # Nothing went to local disk: no Parquet, manifest or MLflow store written since the test began.
    written = [p for root in (REPO, config.root) for p in _files_since(root, started)
               if p.name.endswith(LOCAL_OUTPUT)]
    assert not written, f"outputs written to local disk: {written[:5]}"


def test_outbox_has_one_row_per_eligible_user(chain_runs, storage):
    for day in DATES:
        outbox = storage.read("outbox", day)
        users = upto(storage, "users", day, columns=["user_id"])["user_id"]
        eligible = set(users) | set(storage.read("user_medoids", day)["user_id"])  # nobody capped: max 1 a day
        assert outbox["user_id"].is_unique
        assert set(outbox["user_id"]) == eligible and len(outbox) == len(eligible)
        assert storage.manifest("outbox", day)["metadata"]["eligible_users"] == len(eligible)


def test_shards_ran_on_both_workers(chain_runs, stack, config):
    hosts = Counter()
    for day in DATES:
        shards = _compute_shards(stack, chain_runs[USER_MEDOIDS, day]["dag_run_id"])
        assert len(shards) == SHARDS and {ti["state"] for ti in shards} == {"success"}
        hosts.update(ti["hostname"] for ti in shards)
    assert set(hosts) == {config.celery_hostname(w) for w in WORKERS}, hosts


def test_mlflow_runs_and_artifacts_are_on_the_server_and_in_s3(chain_runs, config):
    import psycopg2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.url("MLFLOW_PORT"))
    artifact_keys = {o["Key"] for o in _s3_objects(config, config.values["S3_ARTIFACT_BUCKET"])}
    run_ids = set()
    for name in EXPERIMENTS:
        exp = client.get_experiment_by_name(name)
        assert exp is not None, f"no MLflow experiment {name}"
        runs = client.search_runs([exp.experiment_id])
        assert runs, f"no runs in {name}"
        for run in runs:
            run_ids.add(run.info.run_id)
            assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
            listed = client.list_artifacts(run.info.run_id)
            if listed:  # served by the MLflow server and stored in the artifact bucket
                assert any(f"/{run.info.run_id}/artifacts/" in k for k in artifact_keys), (name, run.info.run_id)
    assert any(client.list_artifacts(r) for r in run_ids)
    conn = psycopg2.connect(config.postgres_url("mlflow", "postgresql"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT run_uuid FROM runs")
            assert run_ids <= {row[0] for row in cur.fetchall()}  # the backend store is PostgreSQL
    finally:
        conn.close()


def test_successful_tasks_log_no_errors_or_repeated_warnings(chain_runs, stack):
    problems = []
    for (dag_id, _), run in chain_runs.items():
        for ti in stack.task_instances(dag_id, run["dag_run_id"]):
            if ti["state"] != "success" or not ti["try_number"]:
                continue
            resp = stack.api("GET", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/taskInstances/{ti['task_id']}"
                                    f"/logs/{ti['try_number']}", params={"map_index": ti["map_index"]})
            lines = [e for e in resp.json()["content"] if isinstance(e, dict) and e.get("level")]
            where = f"{dag_id}.{ti['task_id']}[{ti['map_index']}]"
            problems += [f"{where}: {e['event']}" for e in lines if e["level"] in ("error", "critical")]
            warnings = Counter(e["event"] for e in lines if e["level"] == "warning")
            problems += [f"{where}: {n}x {event}" for event, n in warnings.items() if n > 1]
    assert not problems, "\n".join(problems[:30])


def test_backfill_survives_a_killed_worker_with_identical_outputs(chain_runs, stack, storage, config, stack_env):
    undisturbed = {day: storage.read("user_medoids", day) for day in DATES}
    body = {"dag_id": USER_MEDOIDS, "from_date": f"{iso(DATES[0])}T00:00:00Z",
            "to_date": f"{iso(DATES[1])}T00:00:00Z", "max_active_runs": 1, "reprocess_behavior": "completed"}
    t0 = time.monotonic()
    backfill = stack.backfill(body)
    victim = config.celery_hostname(WORKERS[1])

    def victim_busy() -> dict | None:
        for run in _backfill_runs(stack):
            for ti in _compute_shards(stack, run["dag_run_id"]):
                if ti["state"] == "running" and ti["hostname"] == victim:
                    return ti
        return None

    killed = stack.wait(victim_busy, time.monotonic() + 600, f"a shard running on {victim}", poll=0.5)
    pid = json.loads((config.root / "pids" / f"{WORKERS[1]}.pid").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)  # the worker and the task it runs, with no chance to clean up
    killed_at = time.monotonic() - t0

    stack.wait(lambda: stack.api("GET", f"/backfills/{backfill['id']}").json()["completed_at"],
               time.monotonic() + 900, "the backfill to complete", poll=3)
    print(f"backfill: worker killed after {killed_at:.0f}s, complete after {time.monotonic() - t0:.0f}s")
    runs = {r["logical_date"][:10]: r for r in _backfill_runs(stack)}
    assert sorted(runs) == [iso(d) for d in DATES]
    for r in runs.values():
        assert r["state"] == "success", stack.task_report(USER_MEDOIDS, r["dag_run_id"])
    retried = [ti for ti in _compute_shards(stack, killed["dag_run_id"]) if ti["map_index"] == killed["map_index"]]
    assert retried[0]["try_number"] >= 2 and retried[0]["hostname"] == config.celery_hostname(WORKERS[0])
    for day in DATES:
        pd.testing.assert_frame_equal(storage.read("user_medoids", day), undisturbed[day])
    status = dict(line.split(None, 1) for line in _stack_cli(stack_env, "status", 60).stdout.splitlines())
    assert status[WORKERS[1]].endswith("NOT RUNNING") and status[WORKERS[0]].endswith(" running"), status


def test_ops_override_is_in_the_newest_partition(chain_runs, stack, storage):
    """Ops pin a campaign item for a new day, as in docs/operations.md: trigger with params."""
    before = storage.read("global_medoids", DATES[-1])
    row = before[before["language"] == "*"].sort_values("cluster_size", ascending=False).iloc[0]
    members = storage.read("global_clusters", DATES[-1])
    members = members[(members["cluster_id"] == row["cluster_id"]) & (members["item_id"] != row["item_id"])]
    new_item = int(members.sort_values("distance")["item_id"].iloc[-1])
    conf = {"replace_representatives": [{"cluster_id": int(row["cluster_id"]), "item_id": new_item, "language": "*"}],
            "reason": "e2e: campaign item"}  # requested_by is not a conf key: the triggering user is
    stack.run(USER_MEDOIDS, iso(END))
    stack.run(GLOBAL_MEDOIDS, iso(END), conf)
    audit = storage.read("overrides", END)
    assert audit[audit["item_id"] == new_item]["requested_by"].tolist() == ["admin"]

    assert max(storage.dates("global_medoids")) == END
    after = storage.read("global_medoids", END)
    pinned = after[(after["cluster_id"] == row["cluster_id"]) & (after["language"] == "*")]
    assert pinned["item_id"].tolist() == [new_item] != [int(row["item_id"])]
    assert pinned["source"].tolist() == ["override"]


def _s3_objects(config: StackConfig, bucket: str) -> list[dict]:
    import boto3

    s3 = config.s3_env()
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL_S3"], aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"], region_name=s3["AWS_DEFAULT_REGION"])
    return [o for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]


def _files_since(root: Path, since: float) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".venv", ".git", "postgres", "node_modules")]
        out += [Path(dirpath, f) for f in filenames if os.path.getmtime(Path(dirpath, f)) >= since]
    return out
