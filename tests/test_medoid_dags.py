"""Both medoid DAGs end to end under dag.test(), the override param path, and the config-driven schedule."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

DAGS = Path(__file__).resolve().parents[1] / "dags"
DAY = date(2026, 11, 14)


def _load(name: str):
    """Parse a DAG file fresh, as the DAG processor does (module-level settings are read at parse time)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / f"{name}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[name]


def _logical(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)


def test_global_schedule_comes_from_config(settings_env):
    settings_env(global_medoids__schedule="0 3 * * 1")
    assert _load("global_medoids").timetable.expression == "0 3 * * 1"
    settings_env(global_medoids__schedule="@daily")
    assert _load("global_medoids").timetable.expression == "0 0 * * *"


def test_dags_follow_conventions():
    for name in ("user_medoids", "global_medoids"):
        dag = _load(name)
        assert dag.default_args["owner"] == "recsys" and dag.default_args["retries"] >= 1
        assert dag.catchup is False
        assert dag.timetable.expression  # time-based, so backfills work


def test_both_dags_run_with_override(world, settings_env, airflow_db):
    from recsys_notify.core.storage import Storage

    settings_env(user_medoids__shards=3, global_medoids__k=12)
    storage = Storage(str(world.root))
    dr = _load("user_medoids").test(logical_date=_logical(DAY))
    assert dr.state == "success"
    assert [d for d in storage.dates("user_medoids")] == [DAY]
    assert {s for s in range(3) if storage.exists(f"user_medoids_shard_{s:03d}_of_003", DAY)} == {0, 1, 2}
    medoids = storage.read("user_medoids", DAY)
    assert medoids["rank"].max() <= 12 and medoids["user_id"].nunique() > 500

    clusters = None
    dag = _load("global_medoids")
    assert dag.test(logical_date=_logical(DAY)).state == "success"
    clusters = storage.read("global_clusters", DAY)
    reps = storage.read("global_medoids", DAY)
    assert set(clusters["cluster_id"]) == set(reps["cluster_id"])
    star = reps[reps["language"] == "*"].set_index("cluster_id")
    # pin a different item of cluster 0 (not its computed representative)
    pick = int(clusters[(clusters["cluster_id"] == 0) & (clusters["item_id"] != star.loc[0, "item_id"])]
               ["item_id"].iloc[0])
    conf = {"replace_representatives": [{"cluster_id": 0, "item_id": pick}], "reason": "campaign",
            "requested_by": "ops@example.com"}
    next_day = date(2026, 11, 15)
    storage.write("user_medoids", next_day, medoids)  # medoids refreshed on another day is read as latest
    assert dag.test(logical_date=_logical(next_day), run_conf=conf).state == "success"
    reps = storage.read("global_medoids", next_day)
    row = reps[(reps["cluster_id"] == 0) & (reps["language"] == "*")].iloc[0]
    assert (row["item_id"], row["source"]) == (pick, "override")
    audit = storage.read("overrides", next_day)
    assert list(audit["requested_by"]) == ["ops@example.com"] and list(audit["reason"]) == ["campaign"]
    _check_mlflow()


def _check_mlflow():
    """Each refresh left an MLflow run with its metrics, plots and (global) the faiss index."""
    import mlflow

    from recsys_notify.core import tracking
    from recsys_notify.core.config import get_settings

    tracking.configure(get_settings())
    client = mlflow.MlflowClient()
    (um_run,) = mlflow.search_runs(experiment_names=["user_medoids"], output_format="list")
    assert um_run.data.metrics["eval_topic_coverage"] >= 0.9
    assert um_run.data.metrics["users_skipped"] > 0
    assert {a.path for a in client.list_artifacts(um_run.info.run_id)} >= {"cluster_sizes.png"}
    runs = mlflow.search_runs(experiment_names=["global_medoids"], output_format="list")
    assert len(runs) == 2
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.data.metrics["overrides_applied"] == 1 and latest.data.metrics["match_rate"] == 1.0
    assert -1 <= latest.data.metrics["silhouette_cosine"] <= 1
    paths = {a.path for a in client.list_artifacts(latest.info.run_id)}
    assert {"cluster_sizes.png", "global_medoids_2d.png", "templates.csv"} <= paths
    assert [a.path for a in client.list_artifacts(latest.info.run_id, "index")] == ["index/global_medoids.faiss"]


def test_global_dag_fails_fast_on_invalid_override(world, settings_env, airflow_db):
    from recsys_notify.core.config import get_settings
    from recsys_notify.core.storage import Storage
    from recsys_notify.user_medoids import step as um

    settings_env(global_medoids__k=8)
    storage = Storage(str(world.root))
    um.run(storage, get_settings(), DAY, {"shards": 1})
    conf = {"replace_representatives": [{"cluster_id": 0, "item_id": 123456789}], "reason": "x",
            "requested_by": "ops"}
    dr = _load("global_medoids").test(logical_date=_logical(DAY), run_conf=conf)
    assert dr.state == "failed"
    (ti,) = dr.get_task_instances()
    assert ti.state == "failed" and ti.try_number == 1  # bad params are not retried
    assert storage.dates("global_medoids") == [] and storage.dates("overrides") == []


def test_scheduled_weekly_run_refreshes_last_day_of_its_interval():
    from types import SimpleNamespace

    from recsys_notify.core.dag_support import run_date

    start, end = _logical(date(2026, 11, 8)), _logical(date(2026, 11, 15))
    scheduled = {"logical_date": start, "data_interval_end": end, "dag_run": SimpleNamespace(run_type="scheduled")}
    manual = {**scheduled, "dag_run": SimpleNamespace(run_type="manual")}
    asset = {"logical_date": None, "triggering_asset_events": {"a": [SimpleNamespace(extra={"dt": "2026-11-12"})],
                                                                 "b": [SimpleNamespace(extra={"dt": "2026-11-13"})]}}
    assert run_date(scheduled) == date(2026, 11, 14)
    assert run_date(manual) == date(2026, 11, 8)
    assert run_date(asset) == date(2026, 11, 13)


def test_refresh_policy_study_dag_is_manual_and_replays_with_its_params(world, settings_env, airflow_db):
    import mlflow

    from recsys_notify.core import tracking
    from recsys_notify.core.config import get_settings
    from recsys_notify.core.storage import Storage
    from recsys_notify.user_medoids import step as um

    settings_env(global_medoids__k=8)
    storage = Storage(str(world.root))
    day = date(2026, 11, 13)  # its next day (DAY) has events
    um.run(storage, get_settings(), day, {"shards": 1})
    dag = _load("refresh_policy_study")
    assert type(dag.timetable).__name__ == "NullTimetable" and set(dag.params) == {"start", "end", "every"}
    bad = dag.test(run_conf={"start": str(DAY), "end": str(day)})
    assert bad.state == "failed" and bad.get_task_instances()[0].try_number == 1  # bad params: no retries
    dr = dag.test(run_conf={"start": str(day), "end": str(day), "every": [1, 2]})
    assert dr.state == "success"
    assert storage.dates("global_medoids") == []  # the study writes nothing
    tracking.configure(get_settings())
    parents = mlflow.search_runs(experiment_names=["refresh_policy"], output_format="list",
                                 filter_string="tags.step = 'refresh_policy'")
    assert len(parents) == 3 and sum("recommended_every_days" in r.data.tags for r in parents) == 1
