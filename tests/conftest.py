"""Shared fixtures: an isolated Airflow home, a settings/data root per test, synthetic data once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.spark_session import spark  # noqa: F401  (the Spark parity tests' session, one per module)

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="recsys-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
for key in [k for k in os.environ if k.startswith("RECSYS__") or k == "RECSYS_CONFIG"]:
    del os.environ[key]

SMALL_WORLD = {"users": 600, "items": 2000, "days": 14, "seed": 7}


@pytest.fixture
def settings_env(tmp_path, monkeypatch):
    """Point settings at a fresh data root; returns a function to set more ``RECSYS__`` overrides."""
    from recsys_notify.core.config import get_settings

    monkeypatch.setenv("RECSYS__DATA_ROOT", str(tmp_path / "data"))
    get_settings.cache_clear()

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"RECSYS__{key.upper()}", str(value))
        get_settings.cache_clear()

    yield set_env
    get_settings.cache_clear()


@pytest.fixture
def storage(settings_env, tmp_path):
    from recsys_notify.core.storage import Storage

    return Storage(str(tmp_path / "data"))


@pytest.fixture(scope="session")
def small_world_root(tmp_path_factory) -> Path:
    """A synthetic dataset generated once per session; copy it (``world`` fixture) before writing."""
    import mlflow

    from recsys_notify.core import tracking
    from recsys_notify.core.config import Settings
    from recsys_notify.core.storage import Storage
    from recsys_notify.synthetic import GeneratorConfig, generate

    root = tmp_path_factory.mktemp("small-world") / "data"
    generate(Storage(str(root)), GeneratorConfig(**SMALL_WORLD))
    tracking.configure(Settings(data_root=str(root)))
    mlflow.search_experiments()  # creates and migrates the SQLite store once; every copy of the world reuses it
    return root


@pytest.fixture
def world(small_world_root, settings_env, tmp_path):
    """A private copy of the small synthetic world as the configured data root."""
    from recsys_notify.core.storage import Storage

    target = tmp_path / "data"
    shutil.copytree(small_world_root, target)
    return Storage(str(target))


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the isolated Airflow metadata DB once (needed by ``dag.test()``)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), timeout=600)
    return _AIRFLOW_HOME


def cli_json(stdout: str):
    """The JSON document the CLI printed, skipping log lines a library may have routed to stdout."""
    import json

    start = min(i for i in (stdout.find("[\n"), stdout.find("{\n")) if i >= 0)
    return json.loads(stdout[start:])
