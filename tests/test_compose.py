"""docker-compose.yaml and Dockerfile are consistent with the code (no Docker engine needed).

The compose file is parsed and interpolated with .env.example the way ``docker compose`` does; the
Airflow containers' environment must load into ``Settings`` and reach an S3 endpoint like MinIO.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from recsys_notify.core.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_COMMANDS = {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                    "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                    "airflow-worker": "celery worker"}
SECRET_WORDS = ("PASSWORD", "SECRET", "FERNET", "TOKEN")
_VAR = re.compile(r"(?<!\$)\$\{(\w+)(?::?[-?]([^}]*))?\}")  # "$${X}" is a literal "${X}"


def _env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _interpolate(value, env: dict[str, str]):
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` substitution."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(1) in env:
            return env[m.group(1)]
        if "${%s:?" % m.group(1) in m.group(0):
            raise KeyError(f"{m.group(1)} is required but not in .env.example")
        return m.group(2) or ""

    return _VAR.sub(sub, value).replace("$$", "$")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(raw) -> dict:
    return _interpolate(raw["services"], _env_example())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_stack_has_every_component_with_an_image_or_build(services):
    assert set(AIRFLOW_COMMANDS) | {"postgres", "redis", "mlflow", "minio", "airflow-init"} <= set(services)
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        if svc.get("build"):
            context = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (REPO / context / "Dockerfile").is_file(), name
    for name, command in AIRFLOW_COMMANDS.items():
        assert services[name]["command"] == command
        assert _env(services[name])["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_depends_on_names_real_services_without_cycles(services):
    graph = {name: list(svc.get("depends_on") or []) for name, svc in services.items()}
    for name, deps in graph.items():
        assert set(deps) <= set(services), f"{name} depends on unknown {set(deps) - set(services)}"
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {' -> '.join(path + (name,))}"
        if name not in done:
            for dep in graph[name]:
                visit(dep, path + (name,))
            done.add(name)

    for name in graph:
        visit(name, ())
    # Every Airflow component waits for its stores and the one-off init (DB migrate, buckets).
    for name in AIRFLOW_COMMANDS:
        assert {"postgres", "redis", "minio", "airflow-init"} <= set(graph[name])
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_volumes_are_declared_or_exist_in_the_repo(raw, services):
    declared = set(raw.get("volumes") or {})
    for name, svc in services.items():
        for spec in svc.get("volumes") or []:
            source = spec.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    for name in AIRFLOW_COMMANDS:
        mounts = {v.split(":")[1] for v in services[name]["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/configs", "/opt/airflow/logs"} <= mounts


def _settings_fields(model: type, prefix: str = "RECSYS__") -> set[str]:
    """Env names of every setting; mapping-valued settings end in ``__`` (any key below them is valid)."""
    names = set()
    for field, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, Settings.__mro__[1]):
            names |= _settings_fields(sub, f"{prefix}{field.upper()}__")
        else:
            names.add(f"{prefix}{field.upper()}" + ("__" if getattr(sub, "__origin__", None) is dict else ""))
    return names


def _is_setting(name: str, known: set[str]) -> bool:
    return name in known or any(k.endswith("__") and name.startswith(k) for k in known)


def test_recsys_env_names_are_settings_fields_and_point_at_stack_services(services):
    known = _settings_fields(Settings)
    for name, svc in services.items():
        unknown = {k for k in _env(svc) if k.startswith("RECSYS__") and not _is_setting(k, known)}
        assert not unknown, f"{name} sets env that is not a Settings field: {unknown}"
    worker = _env(services["airflow-worker"])
    settings = load_settings(environ=worker)
    assert settings.data_root.startswith("s3://")
    tracking = urlparse(settings.tracking_uri)
    mlflow_cmd = services["mlflow"]["command"]
    assert tracking.hostname == "mlflow" and str(tracking.port) == mlflow_cmd[mlflow_cmd.index("--port") + 1]
    endpoint = settings.storage_options["client_kwargs"]["endpoint_url"]
    assert urlparse(endpoint).hostname == "minio" and "minio" in services
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == worker["AWS_ENDPOINT_URL_S3"] == endpoint
    api = urlparse(worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert api.hostname == "airflow-apiserver" and f"{api.port}" in services["airflow-apiserver"]["ports"][0]
    db = urlparse(worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert db.hostname == "postgres" and db.path == "/" + _env(services["postgres"])["POSTGRES_DB"]
    # The MLflow backend database is created by the PostgreSQL init script.
    mlflow_db = urlparse(mlflow_cmd[mlflow_cmd.index("--backend-store-uri") + 1])
    assert mlflow_db.hostname == "postgres"
    assert f"CREATE DATABASE {mlflow_db.path.lstrip('/')};" in (REPO / "docker/postgres-init.sql").read_text()
    # Every Airflow container (the API server renders MLflow links) sees the same settings.
    for name in AIRFLOW_COMMANDS:
        env = _env(services[name])
        assert {k: v for k, v in env.items() if k.startswith(("RECSYS__", "AWS_"))} == \
            {k: v for k, v in worker.items() if k.startswith(("RECSYS__", "AWS_"))}


def test_no_secret_is_committed(raw):
    example = _env_example()
    text = (REPO / "docker-compose.yaml").read_text()
    used = {m.group(1) for m in _VAR.finditer(text)}
    assert used <= set(example), f"variables missing from .env.example: {used - set(example)}"
    for name, svc in raw["services"].items():
        for key, value in _env(svc).items():
            secret = any(word in key for word in SECRET_WORDS) or key.endswith(("ACCESS_KEY_ID", "_KEY"))
            if secret and not key.endswith("_FILE"):
                assert value.startswith("${") and value.endswith("}"), f"{name}.{key} has a literal value"
            url = urlparse(value) if "://" in value else None
            if url and url.password:
                assert url.password.startswith("${"), f"{name}.{key} embeds a literal password"
    for key, value in example.items():
        if any(word in key for word in SECRET_WORDS):
            assert value.startswith("change-me"), f".env.example {key} must be a placeholder"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO)
    assert ignored.returncode == 0, ".env must be git-ignored"


def test_dockerfile_uses_official_airflow_image_matching_the_pins():
    from importlib.metadata import version

    text = (REPO / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert base == f"apache/airflow:{pinned}-python3.11"
    assert pinned == version("apache-airflow")
    for line in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    assert re.search(r"pip install .*-c constraints\.txt .* \.\s", text.replace("\\\n", " ")), \
        "the project itself must be installed with the pinned constraints"


def test_airflow_container_env_reaches_an_s3_endpoint(services):
    """The worker's env (endpoint swapped for a local S3 server) writes and reads a partition in the bucket."""
    import os
    import socket
    import sys
    import time

    import boto3
    import pandas as pd

    from recsys_notify.core.storage import storage_from_settings

    env = _env(services["airflow-worker"])
    bucket = urlparse(load_settings(environ=env).data_root).hostname
    init = _env(services["airflow-init"])
    assert bucket == init["S3_DATA_BUCKET"]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local = f"http://127.0.0.1:{port}"
    aws = {k: v for k, v in env.items() if k.startswith("AWS_")} | {"AWS_ENDPOINT_URL_S3": local}
    env["RECSYS__STORAGE_OPTIONS__CLIENT_KWARGS__ENDPOINT_URL"] = local
    saved = {k: os.environ.get(k) for k in aws}
    try:
        os.environ.update(aws)
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3").create_bucket(Bucket=bucket)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        storage = storage_from_settings(load_settings(environ=env))
        storage.write("events", "2026-11-14", pd.DataFrame({"user_id": [1, 2]}))
        assert storage.read("events", "2026-11-14")["user_id"].tolist() == [1, 2]
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
        assert any("events/dt=20261114" in k for k in keys)
    finally:
        server.terminate()
        server.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
