"""What successful tasks write to stderr shows as ERROR lines in Airflow task logs: the sources stay quiet
there and report real problems as log records (the stack e2e test checks whole task logs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np

from recsys_notify.global_medoids.medoids import FAISS_MIN_POINTS_PER_CENTROID, kmeans


def test_kmeans_on_little_data_warns_once_through_logging_not_stderr(capfd, caplog):
    X = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="recsys_notify.global_medoids.medoids"):
        centroids, assign, _ = kmeans(X, 50, niter=5, seed=0)
    assert capfd.readouterr().err == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "fewer than 39 per cluster" in warnings[0] and "global_medoids.k" in warnings[0]
    assert len(centroids) <= 50 and assign.shape == (300,)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="recsys_notify.global_medoids.medoids"):
        kmeans(X, 300 // FAISS_MIN_POINTS_PER_CENTROID, niter=5, seed=0)
    assert not caplog.records


def test_dag_files_route_mlflow_logging_through_airflow():
    """Importing the DAG support module (every DAG file does) before mlflow leaves MLflow's loggers
    without their own stderr handler and turns off artifact progress bars."""
    code = ("import recsys_notify.core.dag_support, mlflow, logging, os; "
            "h = logging.getLogger('mlflow').handlers; "
            "print(len(h), logging.getLogger('mlflow').propagate, os.environ['MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "True", "false"]


def test_model_registration_prints_nothing_to_stderr(tmp_path, capfd, caplog):
    import mlflow
    import torch

    from recsys_notify.two_tower.step import _register

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("quiet", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pytorch.log_model(torch.nn.Linear(2, 1), name="model", serialization_format="pickle",
                                        pip_requirements=["torch==2.13.0"])
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="recsys_notify.two_tower.step"):
        versions = [_register(info.model_uri, "quiet_model") for _ in range(2)]
    assert versions == ["1", "2"]
    assert "registered" not in capfd.readouterr().err.lower()
    messages = [r.getMessage() for r in caplog.records]
    assert any("Created version '2'" in m for m in messages), messages


def test_logging_local_partition_inputs_raises_no_warning(tmp_path, recwarn):
    import mlflow
    import pandas as pd

    from recsys_notify.core.datasets import EVENTS
    from recsys_notify.core.inputs import resolve, window
    from recsys_notify.core.storage import Storage
    from recsys_notify.core.tracking import log_lineage

    storage = Storage(str(tmp_path / "data"))
    for day in ("2026-11-13", "2026-11-14"):
        storage.write("events", day, pd.DataFrame({"user_id": [1, 2]}))
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    inputs = resolve(storage, {"events": window(EVENTS, "2026-11-14", 2)})
    with mlflow.start_run() as run:
        log_lineage(inputs)
    assert len(mlflow.get_run(run.info.run_id).inputs.dataset_inputs) == 2
    assert not [str(w.message) for w in recwarn if "dataset source" in str(w.message)]
