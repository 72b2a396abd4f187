"""Daily notifications: one personalised push per eligible user from user and global medoids.

Runs when the medoid DAGs publish their assets, and every day on a time schedule (so any date
can be backfilled); a sensor waits until the date's upstream partitions exist.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, Param, dag, task

from recsys_notify.dag_support import (DEFAULT_ARGS, GLOBAL_MEDOIDS_ASSET, START_DATE, USER_MEDOIDS_ASSET,
                                       data_interval_schedule, run_date)

PARAMS = {
    "holdout_percent": Param(None, type=["number", "null"], minimum=0, maximum=100,
                             description="Percent of users held out (recorded, not notified); empty = config"),
    "k_neighbours": Param(None, type=["integer", "null"], minimum=1,
                          description="Global clusters retrieved per seed item; empty = config"),
    "min_candidates": Param(None, type=["integer", "null"], minimum=1,
                            description="Below this many candidates a user gets fallback sources; empty = config"),
    "short_term_enabled": Param(None, type=["boolean", "null"],
                                description="Add yesterday's positive items as seeds; empty = config"),
    "no_medoid_policy": Param(None, type=["string", "null"], enum=[None, "popular", "none"],
                              description="Users without medoids get a popular item or nothing; empty = config"),
    "use_champion": Param(None, type=["boolean", "null"],
                          description="Rank with the registry's two-tower champion when one exists; empty = config"),
    "evaluate": Param(True, type="boolean", description="Evaluate against next-day events and log to MLflow"),
}


def _overrides(params: dict) -> dict:
    return {k: v for k, v in params.items() if k in PARAMS and k != "evaluate" and v is not None}


@dag(
    dag_id="notifications",
    default_args=DEFAULT_ARGS,
    start_date=START_DATE,
    catchup=False,
    schedule=AssetOrTimeSchedule(timetable=data_interval_schedule("@daily"),
                                 assets=Asset(USER_MEDOIDS_ASSET) & Asset(GLOBAL_MEDOIDS_ASSET)),
    max_active_runs=1,
    tags=["recsys", "notifications"],
    params=PARAMS,
    doc_md=__doc__,
)
def notifications():
    @task.sensor(poke_interval=300, timeout=6 * 3600, mode="reschedule")
    def wait_for_medoids(**context) -> bool:
        from recsys_notify.config import get_settings
        from recsys_notify.storage import storage_from_settings

        storage = storage_from_settings(get_settings())
        day = run_date(context)
        return storage.exists("user_medoids", day) and any(d <= day for d in storage.dates("global_medoids"))

    @task
    def notify(**context) -> dict:
        from recsys_notify.config import get_settings
        from recsys_notify.notify import notify as run_notify
        from recsys_notify.storage import storage_from_settings

        settings = get_settings()
        stats = run_notify(storage_from_settings(settings), settings, run_date(context), _overrides(context["params"]))
        return {k: v for k, v in stats.items() if k != "lineage"}

    @task
    def evaluate(**context) -> dict:
        from recsys_notify.config import get_settings
        from recsys_notify.notify.evaluation import evaluate_and_track
        from recsys_notify.storage import storage_from_settings

        if not context["params"]["evaluate"]:
            return {"skipped": True}
        settings = get_settings()
        return evaluate_and_track(storage_from_settings(settings), settings, run_date(context),
                                  _overrides(context["params"]))

    wait_for_medoids() >> notify() >> evaluate()


notifications()
