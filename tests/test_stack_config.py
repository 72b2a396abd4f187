"""The native stack and docker-compose.yaml are driven by one env file with the same variable names.

No service is started here: the compose file is interpolated with .env.example (as in test_compose),
the native stack's configuration is loaded from the same file, and the Airflow environments must agree
once the compose service hostnames are mapped to 127.0.0.1 and the configured ports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest
import yaml

from recsys_notify.stack.config import (
    DEFAULTS,
    HOST,
    PORTS,
    REPO,
    SECRETS,
    StackConfig,
    StackConfigError,
    cpu_sizing,
    create_env_file,
    read_env_file,
)
from recsys_notify.stack.procs import Procs, Service, start_time
from recsys_notify.stack.standalone import standalone_env
from tests.test_compose import _env, _env_example, _interpolate

COMPOSE_ONLY = {"AIRFLOW_UID"}  # the uid files in mounted folders belong to; natively it is the caller
# compose service:port -> the native port variable
SERVICE_PORTS = {"postgres:5432": "POSTGRES_PORT", "redis:6379": "REDIS_PORT", "minio:9000": "S3_PORT",
                 "mlflow:5000": "MLFLOW_PORT", "airflow-apiserver:8080": "AIRFLOW_PORT"}


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "stack.env"
    create_env_file(path)
    return path


@pytest.fixture
def config(env_file, tmp_path) -> StackConfig:
    return StackConfig.load({"STACK_ENV_FILE": str(env_file), "STACK_DIR": str(tmp_path / "state"), "PATH": "/bin"})


@pytest.fixture(scope="module")
def compose() -> dict:
    raw = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    return _interpolate(raw["services"], _env_example())


def _native(value: str, config: StackConfig) -> str:
    for service, key in SERVICE_PORTS.items():
        value = value.replace(service, f"{HOST}:{config.values[key]}")
    return value


def test_every_variable_of_the_env_file_is_used_by_compose_or_the_native_stack():
    example = set(_env_example())
    text = (REPO / "docker-compose.yaml").read_text()
    native = set(DEFAULTS) | set(PORTS) | set(SECRETS)
    unused = {k for k in example if f"${{{k}" not in text and k not in native}
    assert not unused, f".env.example variables nothing reads: {unused}"
    assert native <= example, f"native settings missing from .env.example: {native - example}"
    assert example - native == COMPOSE_ONLY


def test_compose_publishes_the_configured_ports(compose):
    published = {svc: [p.split(":")[1] for p in compose[svc].get("ports", [])] for svc in compose}
    example = _env_example()
    assert example["AIRFLOW_PORT"] in published["airflow-apiserver"]
    assert example["MLFLOW_PORT"] in published["mlflow"]
    assert example["S3_PORT"] in published["minio"]


def test_native_airflow_env_agrees_with_compose(compose, config):
    container = _env(compose["airflow-worker"])
    native = config.airflow_env()
    for key, value in container.items():
        if key in ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", "DUMB_INIT_SETSID"):
            continue  # a path inside the container; a container init option
        assert key in native, f"{key} is set in compose but not natively"
        if any(s in key for s in ("PASSWORD", "SECRET", "FERNET", "ACCESS_KEY")) or "@" in value:
            continue  # secrets differ (the example's placeholders vs generated ones); URLs checked below
        assert native[key] == _native(value, config), key
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        c, n = urlparse(container[key]), urlparse(native[key])
        assert (c.scheme, c.path, c.username) == (n.scheme, n.path, n.username), key
        assert (n.hostname, n.port) == (HOST, config.port("POSTGRES_PORT")) and n.password == \
            config.values["POSTGRES_PASSWORD"]
    mlflow = compose["mlflow"]["command"]
    assert mlflow[mlflow.index("--artifacts-destination") + 1] == f"s3://{config.values['S3_ARTIFACT_BUCKET']}"
    assert urlparse(mlflow[mlflow.index("--backend-store-uri") + 1]).path == "/mlflow"


def test_native_env_loads_settings_pointing_at_the_stack(config):
    from recsys_notify.core.config import load_settings

    settings = load_settings(environ=config.airflow_env())
    assert settings.data_root == f"s3://{config.values['S3_DATA_BUCKET']}/recsys"
    assert settings.tracking_uri == config.url("MLFLOW_PORT")
    assert settings.storage_options["client_kwargs"]["endpoint_url"] == config.url("S3_PORT")


def test_environment_wins_over_the_file_and_bad_values_fail(env_file, tmp_path):
    environ = {"STACK_ENV_FILE": str(env_file), "AIRFLOW_PORT": "18123", "RECSYS__GLOBAL_MEDOIDS__K": "7"}
    config = StackConfig.load(environ)
    assert config.values["AIRFLOW_PORT"] == "18123"
    env = config.airflow_env()
    assert env["AIRFLOW__API__PORT"] == "18123" and env["AIRFLOW__API__BASE_URL"].endswith(":18123")
    assert env["RECSYS__GLOBAL_MEDOIDS__K"] == "7"
    with pytest.raises(StackConfigError, match="AIRFLOW_PORT"):
        StackConfig.load(environ | {"AIRFLOW_PORT": "80a"})
    placeholder = tmp_path / "placeholder.env"
    shutil.copy(REPO / ".env.example", placeholder)
    with pytest.raises(StackConfigError, match="placeholder value of POSTGRES_PASSWORD"):
        StackConfig.load({"STACK_ENV_FILE": str(placeholder)})
    with pytest.raises(StackConfigError, match="does not exist"):
        StackConfig.load({"STACK_ENV_FILE": str(tmp_path / "missing.env")})


def test_created_env_file_has_fresh_secrets_and_is_private(env_file, tmp_path):
    values = read_env_file(env_file)
    assert all(values[k] and not values[k].startswith("change-me") for k in SECRETS)
    other = tmp_path / "other.env"
    create_env_file(other)
    assert all(read_env_file(other)[k] != values[k] for k in SECRETS)
    assert env_file.stat().st_mode & 0o777 == 0o600
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # a valid key


def test_workers_report_their_celery_hostname(config):
    from recsys_notify.stack.hostname import worker_hostname

    env = config.worker_env("worker2")
    assert env["RECSYS_STACK_HOSTNAME"] == config.celery_hostname("worker2")
    saved = os.environ.get("RECSYS_STACK_HOSTNAME")
    os.environ["RECSYS_STACK_HOSTNAME"] = env["RECSYS_STACK_HOSTNAME"]
    try:
        assert worker_hostname() == config.celery_hostname("worker2")
    finally:
        os.environ.pop("RECSYS_STACK_HOSTNAME")
        if saved is not None:
            os.environ["RECSYS_STACK_HOSTNAME"] = saved


@pytest.mark.parametrize("cpus, api, parallelism, concurrency", [(1, "1", "2", "1"), (2, "1", "2", "1"),
                                                                 (16, "2", "16", "8")])
def test_process_counts_follow_the_cores(cpus, api, parallelism, concurrency):
    sizing = cpu_sizing(cpus)
    assert (sizing["AIRFLOW__API__WORKERS"], sizing["AIRFLOW__CORE__PARALLELISM"],
            sizing["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) == (api, parallelism, concurrency)


def test_standalone_env_finds_airflow_on_path_and_uses_the_port():
    env = standalone_env({"PATH": "/usr/bin:/bin", "AIRFLOW_PORT": "18234"})
    assert shutil.which("airflow", path=env["PATH"]) == os.path.join(os.path.dirname(sys.executable), "airflow")
    assert env["AIRFLOW__API__PORT"] == "18234" and env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18234"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18234/execution/"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= max(2, os.cpu_count() or 1)
    assert standalone_env({"RECSYS__DATA_ROOT": "/elsewhere"})["RECSYS__DATA_ROOT"] == "/elsewhere"


def test_stop_kills_the_whole_group_and_never_a_reused_pid(tmp_path):
    procs = Procs(tmp_path)
    service = procs.spawn("sleeper", ["bash", "-c", "sleep 300 & sleep 300"], {"PATH": os.environ["PATH"]},
                          tmp_path)
    time.sleep(0.5)
    children = subprocess.run(["pgrep", "-g", str(service.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 2
    # A pid file whose pid now belongs to another process (different start time) is not signalled.
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        stale = Service("stale", bystander.pid, start_time(bystander.pid) + 1)
        assert procs.stop(stale) == "not running" and bystander.poll() is None
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()
    assert procs.running("sleeper") == service
    assert procs.stop(service, grace=5) == "stopped"
    assert not procs.running("sleeper") and not (tmp_path / "pids" / "sleeper.pid").exists()
    assert subprocess.run(["pgrep", "-g", str(service.pid)], capture_output=True).returncode == 1


def test_standalone_sqlite_waits_for_locks_instead_of_answering_503(tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    env = standalone_env(base | {"AIRFLOW_HOME": str(tmp_path)})
    code = ("from airflow.configuration import conf; "
            "print(conf.getimport('database', 'sql_alchemy_connect_args')['timeout'], "
            "conf.getimport('database', 'sql_alchemy_connect_args_async')['timeout'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert [float(v) for v in out.stdout.split()[-2:]] == [60, 60]
