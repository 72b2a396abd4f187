"""Daily notifications: one personalised push per eligible user from user and global medoids, sharded by user.

Runs when user_medoids commits a date (the asset event carries it) and daily on a time schedule
(so any date can be backfilled); a scheduled run whose user medoids are not there yet is skipped,
the asset-triggered run processes that date. Global medoids are the newest refresh on or before
the date. ``popularity`` checks every input and counts item popularity once (``item_popularity``,
with the date's own ``item_positives`` and ``frames_trimmed`` that later dates reuse),
``select_shard`` runs once per shard (``notifications.shards``) as a dynamically mapped task spread
over the Celery workers, each reading only its users' buckets, and ``combine`` commits outbox,
delivery log and feedback in one atomic write, evaluates against the next day's events when they
exist and logs everything to MLflow (its XCom carries ``mlflow_run_id`` for the "MLflow run" link).
"""

from __future__ import annotations

from airflow.sdk import dag, get_current_context, task

from recsys_notify.core.dag_support import (
    DEFAULT_ARGS,
    START_DATE,
    after,
    assets_of,
    finish_step,
    prepare_step,
    run_part,
    step_params,
    step_parts,
)
from recsys_notify.core.datasets import USER_MEDOIDS


@dag(dag_id="notifications", description="One personalised push per eligible user: outbox and delivery log",
     default_args=DEFAULT_ARGS, start_date=START_DATE, schedule=after("@daily", USER_MEDOIDS), catchup=False,
     max_active_runs=1, tags=["recsys", "notifications"], doc_md=__doc__, params=step_params("notifications"))
def notifications() -> None:
    @task
    def popularity(**context) -> dict:
        return prepare_step("notifications", context, skip_missing=True)

    @task
    def shards(counted: dict, **context) -> list[int]:
        return step_parts("notifications", context)

    @task(map_index_template="{{ shard_label }}")
    def select_shard(shard: int, **context) -> dict:
        get_current_context()["shard_label"] = f"shard {shard}"
        return run_part("notifications", context, shard)

    @task(outlets=assets_of("notifications"))
    def combine(results: list[dict], **context) -> dict:
        return finish_step("notifications", context, results)

    combine(select_shard.expand(shard=shards(popularity())))


notifications()
