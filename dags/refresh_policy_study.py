"""Which global-medoid refresh frequency to run, from evidence: replay ``start..end`` once per policy.

Manual only (no schedule). Params: ``start``, ``end`` (each replayed day needs its user medoids and
the next day's events) and ``every`` (the policies, refresh every N days). For each policy the
global medoids are reclustered in memory every N days (the days between use the last refresh), the
day's notifications are chosen and scored against the next day's events; nothing is written to
storage. MLflow (experiment ``refresh_policy``): a parent run with the table, a quality-vs-cost plot
and the recommendation, and a child run per policy. Same as ``recsys-notify refresh-policy``.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from recsys_notify.core.dag_support import DEFAULT_ARGS, START_DATE, model_params, run_study
from recsys_notify.global_medoids.params import StudyParams


@dag(dag_id="refresh_policy_study", description="Replay history per global-medoid refresh policy and recommend one",
     default_args=DEFAULT_ARGS, start_date=START_DATE, schedule=None, catchup=False, max_active_runs=1,
     tags=["recsys", "medoids", "study"], doc_md=__doc__, params=model_params(StudyParams))
def refresh_policy_study() -> None:
    @task
    def replay(**context) -> dict:
        return run_study("recsys_notify.global_medoids.study:run", context)

    replay()


refresh_policy_study()
