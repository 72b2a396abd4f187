"""Daily notifications: one personalised push per eligible user from user and global medoids.

Runs when user_medoids commits a date (the asset event carries it) and daily on a time schedule
(so any date can be backfilled); a scheduled run whose user medoids are not there yet is skipped,
the asset-triggered run processes that date. Global medoids are the newest refresh on or before
the date. Evaluates against the next day's events when they exist and logs everything to MLflow.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from recsys_notify.core.dag_support import DEFAULT_ARGS, START_DATE, after, assets_of, run_step, step_params
from recsys_notify.core.datasets import USER_MEDOIDS


@dag(dag_id="notifications", description="One personalised push per eligible user: outbox and delivery log",
     default_args=DEFAULT_ARGS, start_date=START_DATE, schedule=after("@daily", USER_MEDOIDS), catchup=False,
     max_active_runs=1, tags=["recsys", "notifications"], doc_md=__doc__, params=step_params("notifications"))
def notifications() -> None:
    @task(outlets=assets_of("notifications"))
    def run(**context) -> dict:
        return run_step("notifications", context, skip_missing=True)

    run()


notifications()
