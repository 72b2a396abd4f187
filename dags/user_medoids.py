"""Daily user medoid refresh, sharded by user hash.

``shards`` lists the shards (``user_medoids.shards``), ``compute_shard`` runs once per shard as a
dynamically mapped task (spread over the Celery workers) and commits that shard's partial dataset,
and ``combine`` commits the ``user_medoids`` partition for the run date in one atomic write and logs
the MLflow run (its XCom carries ``mlflow_run_id`` for the "MLflow run" link).
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from recsys_notify.core.dag_support import (
    DEFAULT_ARGS,
    START_DATE,
    assets_of,
    data_interval_schedule,
    finish_step,
    run_part,
    step_params,
    step_parts,
)


@dag(dag_id="user_medoids", description="Each user's long-term interests as up to max_medoids items",
     default_args=DEFAULT_ARGS, start_date=START_DATE, schedule=data_interval_schedule("@daily"), catchup=False,
     max_active_runs=1, tags=["recsys", "medoids"], doc_md=__doc__, params=step_params("user_medoids"))
def user_medoids() -> None:
    @task
    def shards(**context) -> list[int]:
        return step_parts("user_medoids", context)

    @task(map_index_template="{{ shard_label }}")
    def compute_shard(shard: int, **context) -> dict:
        get_current_context()["shard_label"] = f"shard {shard}"
        return run_part("user_medoids", context, shard)

    @task(outlets=assets_of("user_medoids"))
    def combine(results: list[dict], **context) -> dict:
        return finish_step("user_medoids", context, results)

    combine(compute_shard.expand(shard=shards()))


user_medoids()
