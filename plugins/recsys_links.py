"""Airflow plugin: an "MLflow run" button on every task that reported an MLflow run.

The link is resolved by the API server from the task's ``return_value`` XCom (keys
``mlflow_run_id`` / ``mlflow_experiment_id``); the UI base URL is ``settings.mlflow_ui_url``
(env ``RECSYS__MLFLOW_UI_URL``). Tasks without a run get an empty, disabled link.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink


def _return_value(ti_key: Any) -> Any:
    """The task instance's ``return_value`` XCom, read from the metadata DB (this runs server-side)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(key="return_value", run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
                               task_ids=ti_key.task_id, map_indexes=ti_key.map_index)
        ).first()
        return None if row is None else XComModel.deserialize_value(row)


class MLflowRunLink(BaseOperatorLink):
    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from recsys_notify.core.config import get_settings
        from recsys_notify.core.dag_support import mlflow_run_url

        return mlflow_run_url(_return_value(ti_key), get_settings().mlflow_ui_url) or ""


class RecsysLinksPlugin(AirflowPlugin):
    name = "recsys_links"
    global_operator_extra_links = [MLflowRunLink()]
