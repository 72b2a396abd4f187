"""A real Airflow 3 on 127.0.0.1 for end-to-end tests: api-server, scheduler and dag-processor.

LocalExecutor on SQLite in a temporary AIRFLOW_HOME, simple auth manager with a known admin
password, and the REST API v2 driven the way a user's scripts drive it (``/auth/token``, then
bearer-token calls). Every process is started in its own process group and killed on ``stop()``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SQLITE_LOCK_RETRIES = 10
TERMINAL = {"success", "failed"}
# A task in these states means the run will not succeed on this try (DAG retries wait minutes): stop early.
TASK_FAILED = {"failed", "up_for_retry", "upstream_failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _locked(resp: httpx.Response) -> bool:
    """A write the SQLite metadata DB refused: a 503 "Database is locked", or the same refusal raised where
    the API server reports only a 500 "Database error" (its transaction rolled back, so a retry is safe)."""
    return (resp.status_code == 503 and "Database is locked" in resp.text) or \
        (resp.status_code == 500 and '"reason":"Database error"' in resp.text)


class AirflowApi:
    """The REST API v2 of a running Airflow at ``url``, as users' scripts drive it."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        self.password = password
        self._token: str | None = None

    def check_alive(self, what: str) -> None:
        """Raise if a service this test depends on has died while waiting for ``what``."""

    def logs(self, lines: int = 40) -> str:
        return ""

    def wait(self, ready: Callable[[], Any], deadline: float, what: str, poll: float = 1.0) -> Any:
        while True:
            self.check_alive(what)
            try:
                result = ready()
            except httpx.TransportError:
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(poll)

    # ----- REST API v2 -----
    def _api_up(self) -> bool:
        return httpx.get(f"{self.url}/api/v2/version", timeout=5).status_code == 200

    def token(self) -> str:
        if self._token is None:
            resp = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password},
                              timeout=30)
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, expect: int | None = 200, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        for _ in range(SQLITE_LOCK_RETRIES):  # the SQLite metadata DB refuses a write while the scheduler holds it
            resp = httpx.request(method, f"{self.url}/api/v2{path}", headers=headers, timeout=60, **kwargs)
            if not _locked(resp):
                break
            time.sleep(2)
        if expect is not None and resp.status_code != expect:
            raise AssertionError(f"{method} {path} -> {resp.status_code}: {resp.text}")
        return resp

    def backfill(self, body: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        """Create a backfill, as POST /backfills does, retrying a 409 left by this request's own refused try.

        Airflow commits the backfill row before it creates its runs. On SQLite a run insert refused as locked
        (503) leaves that row behind without runs: Airflow removes such partial backfills itself only after a
        PostgreSQL or MySQL lock error. The retried POST then sees it as "already running" (409) until the
        scheduler marks the run-less backfill complete, two minutes after its creation.
        """
        def created() -> dict[str, Any] | None:
            resp = self.api("POST", "/backfills", json=body, expect=None)
            if resp.status_code == 409:
                return None
            if resp.status_code != 200:
                raise AssertionError(f"POST /backfills -> {resp.status_code}: {resp.text}")
            return resp.json()

        return self.wait(created, time.monotonic() + timeout, f"backfill {body} to be accepted", poll=5)

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.api("GET", "/dags", params={"limit": 100}).json()["dags"]}

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, logical_date: str, conf: dict[str, Any] | None = None,
                expect: int | None = 200) -> httpx.Response:
        body = {"logical_date": f"{logical_date}T00:00:00Z", "conf": conf or {}}
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body, expect=expect)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, Any]:
        """Wait for a run to succeed; fail with task states and logs as soon as a task fails."""
        deadline = time.monotonic() + timeout

        def finished() -> bool:
            failing = {ti["state"] for ti in self.task_instances(dag_id, run_id)} & TASK_FAILED
            return bool(failing) or self.run_state(dag_id, run_id) in TERMINAL

        self.wait(finished, deadline, f"{dag_id} run {run_id}", poll=2)
        run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
        if run["state"] != "success":
            raise AssertionError(f"{dag_id} {run_id} is {run['state']}: {self.task_report(dag_id, run_id)}")
        return run

    def run(self, dag_id: str, logical_date: str, conf: dict[str, Any] | None = None,
            timeout: float = 600) -> dict[str, Any]:
        run_id = self.trigger(dag_id, logical_date, conf).json()["dag_run_id"]
        return self.wait_run(dag_id, run_id, timeout)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances").json()["task_instances"]

    def task_report(self, dag_id: str, run_id: str) -> str:
        """Task states plus the log of each task that did not succeed."""
        lines = []
        for ti in self.task_instances(dag_id, run_id):
            lines.append(f"{ti['task_id']}[{ti['map_index']}]: {ti['state']}")
            if ti["state"] in TASK_FAILED and ti["try_number"]:
                log = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                                      f"/logs/{ti['try_number']}", expect=None,
                               params={"map_index": ti["map_index"]}, headers={"Accept": "text/plain"})
                lines.append(log.text[-6000:])
        return "\n".join(lines)

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params}).json()["dag_runs"]


class AirflowStack(AirflowApi):
    """Start/stop the services and talk to the API; ``env`` adds variables (e.g. ``RECSYS__*``) to every process."""

    def __init__(self, home: Path, dags_folder: Path, env: dict[str, str] | None = None,
                 password: str = "admin-e2e-password") -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}", password)
        self.home = home
        self.dags_folder = dags_folder
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = self._environment(env or {})

    # ----- processes -----
    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
        passwords = self.home / "passwords.json"
        self.home.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({"admin": self.password}))
        return base | {
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),  # this checkout's code, not an install
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),  # never clash with another Airflow
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
        } | extra

    def _airflow(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=True, cwd=REPO)

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        log = open(self.home / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env or self.env,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            cwd=REPO)  # settings' relative paths (configs/) resolve here
        log.close()

    def start(self, dag_ids: Iterable[str], timeout: float = 300, use_job_schedule: bool = False) -> None:
        """Migrate the DB, start the services, wait until the API answers and ``dag_ids`` are parsed."""
        self._airflow("db", "migrate")
        self._spawn("api-server", "api-server", "--port", str(self.port), "--host", "127.0.0.1", "--workers", "1")
        self._spawn("dag-processor", "dag-processor")
        self.start_scheduler(use_job_schedule)
        deadline = time.monotonic() + timeout
        self.wait(lambda: self._api_up(), deadline, "the API server to answer")
        wanted = set(dag_ids)
        self.wait(lambda: wanted <= self.dag_ids(), deadline, f"DAGs {sorted(wanted)} to be parsed")

    def start_scheduler(self, use_job_schedule: bool) -> None:
        """(Re)start the scheduler; without the job schedule only manual/backfill runs are created."""
        self.stop_process("scheduler")
        env = self.env | {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(use_job_schedule)}
        self._spawn("scheduler", "scheduler", env=env)

    def stop_process(self, name: str, grace: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_process(name)

    def logs(self, lines: int = 40) -> str:
        """Tail of every service log, for assertion messages."""
        out = []
        for log in sorted(self.home.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def check_alive(self, what: str) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode} while waiting for {what}\n{self.logs()}")
