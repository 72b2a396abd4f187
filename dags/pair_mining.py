"""Daily pair mining: events of the last ``window_days`` days -> pair_interactions, pair_items, pairs.

Params override the ``pair_mining`` config for one run (empty = configured value); the trigger form
validates them. The task's return value carries the counts and the MLflow run id.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from recsys_notify.core.dag_support import (
    DEFAULT_ARGS,
    START_DATE,
    assets_of,
    data_interval_schedule,
    run_step,
    step_params,
)


@dag(dag_id="pair_mining", description="Mine positive/negative item pairs for the generic embedding model",
     default_args=DEFAULT_ARGS, start_date=START_DATE, schedule=data_interval_schedule("@daily"), catchup=False,
     max_active_runs=2, tags=["recsys", "pairs", "gem"], doc_md=__doc__, params=step_params("pair_mining"))
def pair_mining() -> None:
    @task(outlets=assets_of("pair_mining"))
    def run(**context) -> dict:
        return run_step("pair_mining", context)

    run()


pair_mining()
