"""Start, check and stop the stack's services in dependency order.

PostgreSQL refuses to run as root, so under root it runs as the Debian package's ``postgres`` user.
moto's S3 server keeps objects in memory: ``down`` saves both buckets to ``STACK_DIR/s3`` and ``up``
loads them back, so data, MLflow artifacts and the PostgreSQL state stay consistent across restarts.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from recsys_notify.stack.config import HOST, PORTS, REPO, WORKERS, StackConfig
from recsys_notify.stack.procs import Procs

AIRFLOW = [sys.executable, "-m", "airflow"]
# Start order; ``down`` stops in reverse (workers first, PostgreSQL last).
ORDER = ("postgres", "redis", "s3", "mlflow", "api-server", "scheduler", "dag-processor", "triggerer", *WORKERS)
STOP_SIGNAL = {"postgres": signal.SIGINT}  # PostgreSQL's "fast" shutdown; SIGTERM waits for every client


class StackError(RuntimeError):
    """A service did not start, or the stack is in a state ``up`` cannot start from."""


def _postgres_bin(name: str) -> str:
    """``initdb``/``postgres``: on PATH, else the newest Debian package's bin directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise StackError(f"{name} not found: apt-get install postgresql (or put its bin directory on PATH)")
    return found


def _postgres_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        raise StackError("running as root needs the 'postgres' user (apt-get install postgresql)") from None


def _check_reachable(path: Path, user: str) -> None:
    """Fail early, naming the folder, when ``user`` cannot traverse to ``path`` (e.g. under a 0700 home or tmp)."""
    entry = pwd.getpwnam(user)
    for folder in [p for p in path.parents if p.exists()]:
        st = folder.stat()
        if not (st.st_mode & 0o001 or (st.st_uid == entry.pw_uid and st.st_mode & 0o100)
                or (st.st_gid == entry.pw_gid and st.st_mode & 0o010)):
            raise StackError(f"PostgreSQL runs as '{user}', which cannot enter {folder} (mode "
                             f"{st.st_mode & 0o777:o}): set STACK_DIR to a folder it can reach")


class Stack:
    def __init__(self, config: StackConfig, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.procs = Procs(config.root)
        self.say = say

    # ----- up -----
    def up(self, timeout: float = 600) -> None:
        """Start every service and wait until each answers; on any failure stop what was started."""
        running = [s.name for s in self.procs.recorded() if s.alive()]
        if running:
            raise StackError(f"already running: {', '.join(running)} (make stack-down first)")
        self._check_ports()
        deadline = time.monotonic() + timeout
        try:
            self._postgres(deadline)
            self._redis(deadline)
            self._s3(deadline)
            self._airflow_init()
            self._mlflow(deadline)
            self._airflow(deadline)
        except BaseException:
            self.down(save_s3=False)
            raise

    def _check_ports(self) -> None:
        busy = []
        for key in PORTS:
            with socket.socket() as sock:
                if sock.connect_ex((HOST, self.config.port(key))) == 0:
                    busy.append(f"{key}={self.config.port(key)}")
        if busy:
            raise StackError(f"ports already in use on {HOST}: {', '.join(busy)}; choose others in .env or the "
                             "environment")

    def _wait(self, names: tuple[str, ...], ready: Callable[[], bool], deadline: float, what: str) -> None:
        while True:
            for name in names:
                if not self.procs.running(name):
                    raise StackError(f"{name} exited while waiting for {what}:\n{self.procs.tail(name)}")
            try:
                if ready():
                    return
            except (OSError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise StackError(f"timed out waiting for {what}:\n" + "\n".join(self.procs.tail(n) for n in names))
            time.sleep(0.5)

    def _postgres(self, deadline: float) -> None:
        import psycopg2

        cfg, user = self.config, _postgres_user()
        data = cfg.root / "postgres"
        if user:
            _check_reachable(data, user)
        if not (data / "PG_VERSION").exists():
            self.say(f"initialising PostgreSQL in {data}")
            data.mkdir(parents=True, exist_ok=True)
            password = cfg.root / "postgres.pw"
            password.write_text(cfg.values["POSTGRES_PASSWORD"])
            if user:
                shutil.chown(data, user, user)
                shutil.chown(password, user, user)
            data.chmod(0o700)
            try:
                subprocess.run([_postgres_bin("initdb"), "-D", str(data), "-U", cfg.values["POSTGRES_USER"],
                                f"--pwfile={password}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale"],
                               check=True, capture_output=True, text=True, user=user, group=user,
                               extra_groups=[] if user else None)
            except subprocess.CalledProcessError as exc:
                raise StackError(f"initdb failed (the {user or 'current'} user needs access to {data}):\n"
                                 f"{exc.stderr}") from None
            finally:
                password.unlink()
        self.procs.spawn("postgres", [_postgres_bin("postgres"), "-D", str(data), "-p", cfg.values["POSTGRES_PORT"],
                                      "-c", f"listen_addresses={HOST}", "-c", "unix_socket_directories="],
                         cfg.base_env(), data, user=user)

        def connect() -> bool:
            try:
                psycopg2.connect(cfg.postgres_url("postgres", "postgresql")).close()
            except psycopg2.OperationalError:  # not accepting connections yet
                return False
            return True

        self._wait(("postgres",), connect, deadline, "PostgreSQL")
        self._create_databases()

    def _create_databases(self) -> None:
        """The compose databases: ``airflow`` (POSTGRES_DB) and those of docker/postgres-init.sql."""
        import psycopg2
        from psycopg2 import sql

        wanted = ["airflow"] + [line.split()[2].rstrip(";") for line in (REPO / "docker/postgres-init.sql")
                                .read_text().splitlines() if line.upper().startswith("CREATE DATABASE")]
        conn = psycopg2.connect(self.config.postgres_url("postgres", "postgresql"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database")
                have = {row[0] for row in cur.fetchall()}
                for name in wanted:
                    if name not in have:
                        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()

    def _redis(self, deadline: float) -> None:
        server = shutil.which("redis-server")
        if not server:
            raise StackError("redis-server not found: apt-get install redis-server")
        data = self.config.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self.procs.spawn("redis", [server, "--bind", HOST, "--port", self.config.values["REDIS_PORT"], "--dir",
                                   str(data), "--save", "", "--appendonly", "no", "--daemonize", "no"],
                         self.config.base_env(), data)

        def pong() -> bool:
            with socket.create_connection((HOST, self.config.port("REDIS_PORT")), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        self._wait(("redis",), pong, deadline, "Redis")

    def _s3(self, deadline: float) -> None:
        cfg = self.config
        self.procs.spawn("s3", [sys.executable, "-m", "moto.server", "-H", HOST, "-p", cfg.values["S3_PORT"]],
                         cfg.base_env(), cfg.root)
        self._wait(("s3",), lambda: httpx.get(cfg.url("S3_PORT"), timeout=2).status_code == 200, deadline,
                   "the S3 server")
        s3 = self.s3_client()
        for bucket in self.buckets():
            s3.create_bucket(Bucket=bucket)
        saved = cfg.root / "s3"
        for path in sorted(p for p in saved.rglob("*") if p.is_file()) if saved.is_dir() else []:
            bucket, key = path.relative_to(saved).parts[0], "/".join(path.relative_to(saved).parts[1:])
            s3.upload_file(str(path), bucket, key)

    def buckets(self) -> tuple[str, str]:
        return self.config.values["S3_DATA_BUCKET"], self.config.values["S3_ARTIFACT_BUCKET"]

    def s3_client(self) -> Any:
        """boto3 S3 client of the stack's S3 server (boto3's client classes are generated at run time)."""
        import boto3

        env = self.config.s3_env()
        return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])

    def _airflow_init(self) -> None:
        """``airflow db migrate`` and the simple auth manager's password file (compose's airflow-init)."""
        env = self.config.airflow_env()
        auth = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        auth.parent.mkdir(parents=True, exist_ok=True)
        auth.touch(mode=0o600)
        auth.write_text(json.dumps({"admin": self.config.values["AIRFLOW_ADMIN_PASSWORD"]}))
        self.say("migrating the Airflow metadata DB")
        with open(self.procs.log("airflow-init"), "ab") as log:
            done = subprocess.run([*AIRFLOW, "db", "migrate"], env=env, cwd=REPO, stdout=log,
                                  stderr=subprocess.STDOUT)
        if done.returncode:
            raise StackError(f"airflow db migrate failed:\n{self.procs.tail('airflow-init')}")

    def _mlflow(self, deadline: float) -> None:
        cfg = self.config
        env = cfg.mlflow_env() | {"MLFLOW_BACKEND_STORE_URI": cfg.postgres_url("mlflow"),
                                  "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{cfg.values['S3_ARTIFACT_BUCKET']}"}
        self.procs.spawn("mlflow", [sys.executable, "-m", "mlflow", "server", "--serve-artifacts", "--host", HOST,
                                    "--port", cfg.values["MLFLOW_PORT"], "--workers", "1",
                                    "--allowed-hosts", "localhost:*,127.0.0.1:*"], env, cfg.root)
        self._wait(("mlflow",), lambda: httpx.get(f"{cfg.url('MLFLOW_PORT')}/health", timeout=5).status_code == 200,
                   deadline, "the MLflow server")

    def _airflow(self, deadline: float) -> None:
        cfg = self.config
        env = cfg.airflow_env()
        commands = {"api-server": ["api-server"], "scheduler": ["scheduler"], "dag-processor": ["dag-processor"],
                    "triggerer": ["triggerer", "--skip-serve-logs"]}
        for name, args in commands.items():
            self.procs.spawn(name, [*AIRFLOW, *args], env, REPO)  # configs/ paths in settings resolve here
        for name in WORKERS:
            # No log server (it binds every interface): the api-server reads the shared log folder.
            self.procs.spawn(name, [*AIRFLOW, "celery", "worker", "--celery-hostname", cfg.celery_hostname(name),
                                    "--skip-serve-logs"], cfg.worker_env(name), REPO)
        api = cfg.url("AIRFLOW_PORT")
        self._wait(tuple(commands), lambda: httpx.get(f"{api}/api/v2/version", timeout=5).status_code == 200,
                   deadline, "the Airflow API server")

        def healthy() -> bool:
            health = httpx.get(f"{api}/api/v2/monitor/health", timeout=5).json()
            return all((health.get(part) or {}).get("status") == "healthy"
                       for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

        self._wait(tuple(commands), healthy, deadline, "scheduler, dag-processor and triggerer heartbeats")
        for name in WORKERS:
            marker = f"{cfg.celery_hostname(name)} ready"
            self._wait((name,), lambda n=name, m=marker: m in self.procs.tail(n, 200), deadline, f"Celery {name}")

    # ----- down / status -----
    def down(self, save_s3: bool = True) -> list[tuple[str, str]]:
        """Stop every service this stack recorded (reverse start order); returns (name, what happened)."""
        services = {s.name: s for s in self.procs.recorded()}
        if save_s3 and "s3" in services and services["s3"].alive():
            self._save_s3()
        stopped = []
        for name in sorted(services, key=lambda n: ORDER.index(n) if n in ORDER else -1, reverse=True):
            t0 = time.monotonic()
            state = self.procs.stop(services[name], STOP_SIGNAL.get(name, signal.SIGTERM))
            stopped.append((name, f"{state} ({time.monotonic() - t0:.1f}s)"))
        return stopped

    def _save_s3(self) -> None:
        """Copy both buckets to ``STACK_DIR/s3`` (moto forgets them when it stops)."""
        saved = self.config.root / "s3"
        shutil.rmtree(saved, ignore_errors=True)
        s3 = self.s3_client()
        for bucket in self.buckets():
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith("/"):
                        continue  # a folder marker, not an object with content
                    target = saved / bucket / obj["Key"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, obj["Key"], str(target))

    def status(self) -> list[tuple[str, int, bool]]:
        return [(s.name, s.pid, s.alive()) for s in self.procs.recorded()]
