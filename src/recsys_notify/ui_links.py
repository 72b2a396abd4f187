"""Links from Airflow task results to the MLflow UI (used by the ``plugins/`` extra link).

Tasks that log to MLflow return a small dict with ``mlflow_run_id`` and ``mlflow_experiment_id``;
this turns it into the run's page so an operator goes from a task in the grid to its metrics in one click.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote


def mlflow_run_url(result: Any, base_url: str) -> str | None:
    """The MLflow UI page of the run a task reported in its return value; None when it reported none."""
    if not isinstance(result, Mapping) or not result.get("mlflow_run_id"):
        return None
    base = base_url.rstrip("/")
    run_id = quote(str(result["mlflow_run_id"]), safe="")
    experiment_id = result.get("mlflow_experiment_id")
    if experiment_id in (None, ""):
        return f"{base}/#/runs/{run_id}"  # the UI redirects to the run's experiment
    return f"{base}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{run_id}"
