"""Global medoid refresh with ops overrides; the schedule comes from ``global_medoids.schedule``.

Trigger with params to change what ships: ``replace_representatives`` pins an item as a
cluster's representative (optionally for one language), ``block_items`` keeps items out,
``revoke_overrides`` ends earlier overrides; ``reason`` is required with any of them (only then) and
``expires`` (inclusive) bounds them; ``requested_by`` is the triggering user. Bad params
fail the task before anything is computed or written; overrides persist in the ``overrides``
dataset (audit trail) and apply to every later refresh until they expire. Config keys of
``global_medoids`` (``k``, ``niter``, ...) can be overridden for one run too.

Scheduled runs refresh on the last complete day of their data interval (a weekly run created after
the week ends uses that week's newest user medoids); manual triggers refresh their logical date, or
``date`` when triggered without one (how a second request for the same day is sent: Airflow allows one
run per logical date). An override also re-materialises later refreshes it covers. Unknown conf keys
are refused by the API (plugin ``recsys_console``) before a run exists.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from recsys_notify.core.config import get_settings
from recsys_notify.core.dag_support import (
    DEFAULT_ARGS,
    START_DATE,
    assets_of,
    data_interval_schedule,
    run_date_param,
    run_step,
    step_params,
)


@dag(dag_id="global_medoids", description="Cluster all user medoids, pick representatives, apply ops overrides",
     default_args=DEFAULT_ARGS, start_date=START_DATE,
     schedule=data_interval_schedule(get_settings().global_medoids.schedule), catchup=False, max_active_runs=1,
     tags=["recsys", "medoids", "ops"], doc_md=__doc__, params=step_params("global_medoids") | run_date_param())
def global_medoids() -> None:
    @task(outlets=assets_of("global_medoids"))
    def run(**context) -> dict:
        return run_step("global_medoids", context)

    run()


global_medoids()
