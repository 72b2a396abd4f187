"""GEM training: maps every item's content embedding into the collaborative space, after pair_mining.

Runs when pair_mining commits a date's ``pairs`` (the asset event carries the date), and on
``gem.schedule`` so any date can be backfilled; a scheduled run whose pairs are not there yet is
skipped (the asset-triggered run processes that date). Trains on the date's pairs (objective
``pairs`` or ``als``), writes ``gem_embeddings`` for every item known on that date and logs the run
to MLflow (experiment ``gem.experiment``).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from recsys_notify.core.config import get_settings
from recsys_notify.core.dag_support import DEFAULT_ARGS, START_DATE, after, assets_of, run_step, step_params
from recsys_notify.core.datasets import PAIRS


@dag(dag_id="gem", description="Train the generic embedding model (content -> collaborative), write gem_embeddings",
     default_args=DEFAULT_ARGS, start_date=START_DATE, schedule=after(get_settings().gem.schedule, PAIRS),
     catchup=False, max_active_runs=1, tags=["recsys", "embeddings", "training"], doc_md=__doc__,
     params=step_params("gem"))
def gem() -> None:
    @task(outlets=assets_of("gem"), execution_timeout=timedelta(hours=6))
    def run(**context) -> dict:
        return run_step("gem", context, skip_missing=True)

    run()


gem()
