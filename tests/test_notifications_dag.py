"""The notifications DAG under dag.test(), its params, and the `notifications` CLI subcommand."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest
from conftest import cli_json
from notify_fixtures import build_upstream

DT = date(2026, 11, 12)


def _dag():
    from airflow.dag_processing.dagbag import DagBag
    from conftest import REPO

    bag = DagBag(dag_folder=str(REPO / "dags" / "notifications.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("notifications")


def test_dag_runs_and_logs_evaluation_to_mlflow(world, airflow_db):
    import mlflow

    from recsys_notify.core.config import get_settings

    build_upstream(world, DT)
    dag = _dag()
    assert dag.default_args["retries"] >= 1 and not dag.catchup
    assert dag.timetable.asset_condition.name == "user_medoids"
    dr = dag.test(logical_date=datetime(2026, 11, 12, tzinfo=timezone.utc), run_conf={"holdout_percent": 20})
    assert dr.state == "success"
    outbox = world.read("outbox", DT)
    assert outbox["user_id"].is_unique and 0.1 < outbox["holdout"].mean() < 0.3

    tis = dr.get_task_instances()
    shards = sorted(ti.map_index for ti in tis if ti.task_id == "select_shard")
    assert shards == list(range(get_settings().notifications.shards)) and len(shards) > 1
    result = next(ti for ti in tis if ti.task_id == "combine").xcom_pull(task_ids="combine")
    mlflow.set_tracking_uri(get_settings().tracking_uri)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.experiment_id == result["mlflow_experiment_id"]
    assert run.data.metrics["hit_rate_cluster"] == pytest.approx(result["summary"]["hit_rate_cluster"])
    assert run.data.params["holdout_percent"] == "20.0"
    assert any(i.dataset.name == f"user_medoids/dt={DT:%Y%m%d}" for i in run.inputs.dataset_inputs)


def test_dag_rejects_invalid_params(airflow_db):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        _dag().test(logical_date=datetime(2026, 11, 12, tzinfo=timezone.utc), run_conf={"holdout_percent": 150})


def test_cli_notifications_writes_outbox(world, capsys):
    from recsys_notify.cli import main

    build_upstream(world, DT)
    assert main(["notifications", "--date", DT.isoformat(), "--evaluate", "false", "--holdout-percent", "0"]) == 0
    out = cli_json(capsys.readouterr().out)
    assert out[0]["summary"]["holdout"] == 0 and out[0]["outputs"]["outbox"] == len(world.read("outbox", DT))
    assert "hit_rate_item" not in out[0]["summary"]
    assert main(["notifications", "--date", "2026-11-13"]) == 2
    assert "user_medoids has no partition for 2026-11-13" in capsys.readouterr().err
    assert main(["notifications", "--date", DT.isoformat(), "--holdout-percent", "nope"]) == 2
    assert "error: invalid notifications parameter(s): notifications.holdout_percent" in capsys.readouterr().err
