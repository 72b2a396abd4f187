"""Daily user medoid refresh, sharded by user hash.

``plan_shards`` lists the shards (``user_medoids.shards`` in config), ``compute_shard`` runs once
per shard as a dynamically mapped task and commits that shard's partial dataset, and ``combine``
commits the ``user_medoids`` partition for the run date in one atomic write and logs the MLflow
run (its XCom carries ``mlflow_run_id`` for the "MLflow run" link).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, Param, dag, get_current_context, task

from recsys_notify.dag_support import (DEFAULT_ARGS, START_DATE, USER_MEDOIDS_ASSET, data_interval_schedule,
                                       run_date)

USER_MEDOIDS = Asset(USER_MEDOIDS_ASSET)


@dag(
    dag_id="user_medoids",
    schedule=data_interval_schedule("@daily"),
    start_date=START_DATE,
    catchup=False,
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    tags=["recsys", "medoids"],
    doc_md=__doc__,
    params={
        "algorithm": Param(None, type=["string", "null"], enum=[None, "dbscan", "hdbscan", "pinnersage"],
                           description="Clustering/selection mode for this run; empty = user_medoids.algorithm"),
        "seed": Param(None, type=["integer", "null"], minimum=0,
                      description="Sampling seed for this run; empty = user_medoids.seed"),
    },
)
def user_medoids() -> None:
    @task
    def plan_shards() -> list[int]:
        from recsys_notify.config import get_settings

        return list(range(get_settings().user_medoids.shards))

    @task(map_index_template="{{ shard_label }}")
    def compute_shard(shard: int, **context: Any) -> dict[str, Any]:
        from recsys_notify import user_medoids as um
        from recsys_notify.config import get_settings
        from recsys_notify.storage import storage_from_settings

        settings = get_settings()
        get_current_context()["shard_label"] = f"shard {shard}/{settings.user_medoids.shards}"
        params = context["params"]
        return um.run_shard(storage_from_settings(settings), settings, run_date(context), shard,
                            settings.user_medoids.shards, params.get("algorithm"), params.get("seed"))

    @task(outlets=[USER_MEDOIDS])
    def combine(shard_results: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        from recsys_notify import user_medoids as um
        from recsys_notify.config import get_settings
        from recsys_notify.storage import storage_from_settings

        settings = get_settings()
        day = run_date(context)
        result = um.combine(storage_from_settings(settings), settings, day, settings.user_medoids.shards)
        context["outlet_events"][USER_MEDOIDS].extra = {"dt": day.isoformat()}  # consumers process this day
        return result

    combine(compute_shard.expand(shard=plan_shards()))


user_medoids_dag = user_medoids()
