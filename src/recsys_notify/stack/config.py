"""The native stack's configuration: one env file (the one docker compose reads) plus the environment.

``.env`` (or ``STACK_ENV_FILE``) holds the same variables as for ``docker compose``: secrets, bucket
names, ports. Exported variables win over the file, as with compose. From them come the environment
of every process; the Airflow processes get the same ``AIRFLOW__*``, ``RECSYS__*`` and ``AWS_*`` names
as the compose containers, with service hostnames replaced by 127.0.0.1 and the configured ports
(``tests/test_stack_config.py`` checks the two agree).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
PORTS = {  # variable -> default; every service listens on HOST only
    "AIRFLOW_PORT": 8080,
    "MLFLOW_PORT": 5000,
    "S3_PORT": 9000,
    "POSTGRES_PORT": 5432,
    "REDIS_PORT": 6379,
    "SCHEDULER_HEALTH_PORT": 8974,
}
DEFAULTS = {"POSTGRES_USER": "airflow", "S3_ACCESS_KEY": "recsys", "S3_DATA_BUCKET": "recsys-data",
            "S3_ARTIFACT_BUCKET": "mlflow-artifacts", "STACK_DIR": ".stack"}
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "S3_SECRET_KEY")
WORKERS = ("worker1", "worker2")


class StackConfigError(ValueError):
    """The env file is missing a value, has a placeholder secret, or a port is invalid."""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as docker compose reads them (comments and blank lines skipped, quotes stripped)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise StackConfigError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def create_env_file(path: Path, example: Path = REPO / ".env.example") -> None:
    """Copy ``.env.example`` with every ``change-me`` secret replaced by a fresh random one."""
    from cryptography.fernet import Fernet

    lines = []
    for line in example.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and value.startswith("change-me"):
            value = Fernet.generate_key().decode() if key == "AIRFLOW_FERNET_KEY" else secrets.token_urlsafe(24)
            line = f"{key}={value}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def cpu_sizing(cpus: int) -> dict[str, str]:
    """Process counts for a machine with ``cpus`` cores (Airflow's defaults assume a large box:
    32 LocalExecutor processes, 16 Celery processes per worker, 2 parsing processes)."""
    per_worker = max(1, cpus // len(WORKERS))
    return {
        "AIRFLOW__API__WORKERS": "1" if cpus <= 4 else "2",
        "AIRFLOW__CORE__PARALLELISM": str(max(2, cpus)),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(per_worker),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1" if cpus <= 4 else "2",
    }


@dataclass(frozen=True)
class StackConfig:
    values: dict[str, str]  # env file merged with the environment
    environ: dict[str, str]  # the caller's environment (its AIRFLOW__*/RECSYS__* pass through and win)

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, create: bool = False) -> StackConfig:
        """Read ``STACK_ENV_FILE`` (default ``.env``); with ``create`` a missing file is made from the example."""
        environ = dict(os.environ if environ is None else environ)
        path = Path(environ.get("STACK_ENV_FILE", REPO / ".env"))
        if not path.exists():
            if not create:
                raise StackConfigError(f"{path} does not exist: run `make stack` once, or copy .env.example")
            create_env_file(path)
        values = DEFAULTS | {k: str(v) for k, v in PORTS.items()} | read_env_file(path)
        values |= {k: environ[k] for k in (*values, *SECRETS) if k in environ}
        config = cls(values, environ)
        config.validate(path)
        return config

    def validate(self, path: Path) -> None:
        missing = [k for k in SECRETS if not self.values.get(k)]
        if missing:
            raise StackConfigError(f"{path}: set {', '.join(missing)}")
        placeholders = [k for k in SECRETS if self.values[k].startswith("change-me")]
        if placeholders:
            raise StackConfigError(f"{path}: replace the placeholder value of {', '.join(placeholders)}")
        for key in PORTS:
            if not self.values[key].isdigit() or not 0 < int(self.values[key]) < 65536:
                raise StackConfigError(f"{key}={self.values[key]!r} is not a TCP port")

    def port(self, key: str) -> int:
        return int(self.values[key])

    def url(self, key: str) -> str:
        return f"http://{HOST}:{self.port(key)}"

    @property
    def root(self) -> Path:
        """Pid files, logs, PostgreSQL data and AIRFLOW_HOME (relative to the repository unless absolute)."""
        return (REPO / self.values["STACK_DIR"]).resolve()

    def postgres_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        v = self.values
        return f"{driver}://{v['POSTGRES_USER']}:{v['POSTGRES_PASSWORD']}@{HOST}:{v['POSTGRES_PORT']}/{database}"

    def s3_env(self) -> dict[str, str]:
        """S3 client settings for boto3/s3fs (and MLflow's artifact proxy) in every process."""
        return {
            "AWS_ENDPOINT_URL_S3": self.url("S3_PORT"),
            "AWS_ACCESS_KEY_ID": self.values["S3_ACCESS_KEY"],
            "AWS_SECRET_ACCESS_KEY": self.values["S3_SECRET_KEY"],
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def base_env(self) -> dict[str, str]:
        """The caller's environment with this interpreter's bin/ first on PATH (subprocesses find ``airflow``)."""
        bin_dir = str(Path(sys.executable).parent)
        return self.environ | {"PATH": os.pathsep.join([bin_dir, self.environ.get("PATH", "")])}

    def airflow_env(self) -> dict[str, str]:
        """Environment of every Airflow process: the compose names, local addresses, machine sizing."""
        v = self.values
        api = self.url("AIRFLOW_PORT")
        shared = {  # the same names and meaning as x-airflow-common in docker-compose.yaml
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.root / "auth" / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres_url("airflow"),
            "AIRFLOW__CELERY__RESULT_BACKEND": self.postgres_url("airflow", "db+postgresql+psycopg2"),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{HOST}:{v['REDIS_PORT']}/0",
            "AIRFLOW__CORE__FERNET_KEY": v["AIRFLOW_FERNET_KEY"],
            "AIRFLOW__API_AUTH__JWT_SECRET": v["AIRFLOW_JWT_SECRET"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
            "AIRFLOW__CORE__DEFAULT_TIMEZONE": "utc",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
            "RECSYS__DATA_ROOT": f"s3://{v['S3_DATA_BUCKET']}/recsys",
            "RECSYS__STORAGE_OPTIONS__CLIENT_KWARGS__ENDPOINT_URL": self.url("S3_PORT"),
            "RECSYS__MLFLOW_TRACKING_URI": self.url("MLFLOW_PORT"),
            "RECSYS__MLFLOW_ARTIFACT_ROOT": "mlflow-artifacts:/",
            "RECSYS__MLFLOW_UI_URL": f"http://localhost:{v['MLFLOW_PORT']}",
            **self.s3_env(),
        }
        native = {  # what a container gets from its image and port mapping
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": v["AIRFLOW_PORT"],
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": v["SCHEDULER_HEALTH_PORT"],
            **cpu_sizing(os.cpu_count() or 1),
        }
        passed = {k: val for k, val in self.environ.items() if k.startswith(("AIRFLOW__", "RECSYS__"))}
        return self.base_env() | shared | native | passed

    def worker_env(self, name: str) -> dict[str, str]:
        """A Celery worker's environment: task instances report ``name@host`` as their hostname."""
        return self.airflow_env() | {
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "recsys_notify.stack.hostname.worker_hostname",
            "RECSYS_STACK_HOSTNAME": self.celery_hostname(name),
        }

    @staticmethod
    def celery_hostname(name: str) -> str:
        return f"{name}@{socket.gethostname()}"

    def mlflow_env(self) -> dict[str, str]:
        return self.base_env() | self.s3_env() | {"MLFLOW_S3_ENDPOINT_URL": self.url("S3_PORT")}
