"""The "MLflow run" extra link on a finished task points at the run that task logged."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from recsys_notify.core.dag_support import mlflow_run_url

UI = "http://mlflow.example:5001"


PROBE_DAG = """
from datetime import datetime, timezone

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False)
def links_probe():
    @task
    def train() -> dict:
        from recsys_notify.core.tracking import tracked_run

        with tracked_run("link_probe", "probe", params={"k": 3}) as run:
            return {"mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id, "rows": 1}

    @task
    def plain() -> None:
        return None

    train() >> plain()


links_probe()
"""


def _run_probe(tmp_path, monkeypatch):
    """Run a two-task DAG (one task logs an MLflow run, one does not) from its own DAG bundle."""
    import json

    from airflow.dag_processing.dagbag import DagBag

    folder = tmp_path / "probe_dags"
    folder.mkdir()
    (folder / "links_probe.py").write_text(PROBE_DAG)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "link-probe", "classpath": local, "kwargs": {"path": str(folder)}},
    ]))
    dag = DagBag(dag_folder=str(folder)).get_dag("links_probe")
    dr = dag.test(logical_date=datetime(2026, 11, 14, tzinfo=timezone.utc))
    assert dr.state == "success"
    return dr


def test_link_for_finished_task_points_at_its_mlflow_run(airflow_db, settings_env, tmp_path, monkeypatch):
    import mlflow
    from airflow.models.serialized_dag import SerializedDagModel

    from recsys_notify.core.tracking import configure

    settings_env(mlflow_ui_url=UI + "/")
    dr = _run_probe(tmp_path, monkeypatch)
    # Resolve links the way the API server does: on the serialized DAG, from the stored task instances.
    sdag = SerializedDagModel.get_dag("links_probe")
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    train = sdag.get_task("train")
    assert "MLflow run" in train.extra_links

    url = train.get_extra_links(tis["train"], "MLflow run")
    configure()
    run = mlflow.get_run(url.rsplit("/runs/", 1)[1])
    assert url == f"{UI}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert mlflow.get_experiment(run.info.experiment_id).name == "link_probe"
    assert run.data.params == {"k": "3"}

    assert sdag.get_task("plain").get_extra_links(tis["plain"], "MLflow run") == ""


@pytest.mark.parametrize("result", [None, "text", {}, {"mlflow_run_id": ""}, {"rows": 3}])
def test_no_link_without_a_reported_run(result):
    assert mlflow_run_url(result, UI) is None


def test_link_without_experiment_uses_run_redirect_and_escapes_ids():
    assert mlflow_run_url({"mlflow_run_id": "a/b"}, UI) == f"{UI}/#/runs/a%2Fb"
    assert mlflow_run_url({"mlflow_run_id": "r1", "mlflow_experiment_id": 7}, UI + "/") == \
        f"{UI}/#/experiments/7/runs/r1"
