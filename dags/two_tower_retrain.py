"""Daily two-tower retrain: train the chosen experiments (validated on the run date), register each
model, and promote a version to ``champion`` only if it beats the current one (registry gate)."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Param, dag, task

from recsys_notify.dag_support import DEFAULT_ARGS, START_DATE, data_interval_schedule, run_date

# Names of the shipped configs (file listing only: no heavy imports at parse time).
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs" / "two_tower").glob("*.yaml"))
DEFAULT_EXPERIMENTS = ["dedup_user_history", "simclr_concat_history_creator"]


@dag(
    dag_id="two_tower_retrain",
    default_args=DEFAULT_ARGS,
    start_date=START_DATE,
    schedule=data_interval_schedule("@daily"),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "two_tower", "training"],
    doc_md=__doc__,
    params={
        "experiments": Param(DEFAULT_EXPERIMENTS, type="array", minItems=1, uniqueItems=True,
                             items={"type": "string", "enum": EXPERIMENTS},
                             description="experiment configs (configs/two_tower/*.yaml) to train"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, maximum=200,
                        description="override the configs' epochs (empty = use the config)"),
    },
)
def two_tower_retrain():
    @task
    def experiments(**context) -> list[str]:
        return list(context["params"]["experiments"])

    @task(max_active_tis_per_dagrun=1)
    def train(name: str, **context) -> dict:
        """Train and register one experiment (MLflow run); no promotion yet."""
        from recsys_notify.config import get_settings
        from recsys_notify.storage import storage_from_settings
        from recsys_notify.two_tower.retrain import train_experiment

        settings = get_settings()
        epochs = context["params"].get("epochs")
        return train_experiment(storage_from_settings(settings), run_date(context), settings, name,
                                {"epochs": epochs} if epochs else None)

    @task
    def promote(trained: list[dict], **context) -> dict:
        """Gate each new version against the champion, in the order trained."""
        from recsys_notify.config import get_settings
        from recsys_notify.storage import storage_from_settings
        from recsys_notify.two_tower.registry import gate

        settings = get_settings()
        storage = storage_from_settings(settings)
        trained = list(trained[:])  # one slice request; iterating probes past the end and logs a 404
        gates = [gate(storage, run_date(context), settings, t["version"]) for t in trained]
        best = max(trained, key=lambda t: t["metrics"].get(settings.two_tower.primary_metric) or float("-inf"))
        return {"gates": gates, "champion_version": gates[-1]["champion_version"],
                "mlflow_run_id": best["mlflow_run_id"], "mlflow_experiment_id": best["mlflow_experiment_id"]}

    promote(train.expand(name=experiments()))


two_tower_retrain()
