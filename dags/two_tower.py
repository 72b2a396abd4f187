"""Daily two-tower retrain: train the configured experiments (validated on the run date), register each
model, and promote a version to ``champion`` only if it beats the current one (registry gate).

``experiments`` lists the configs (``two_tower.experiments``, every one validated first), ``train``
runs once per experiment (mapped, one at a time: each uses the machine's cores) and ``promote``
gates the new versions in the order trained.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from recsys_notify.core.dag_support import (
    DEFAULT_ARGS,
    START_DATE,
    data_interval_schedule,
    finish_step,
    run_part,
    step_params,
    step_parts,
)


@dag(dag_id="two_tower", description="Train two-tower experiments, register them, gate against the champion",
     default_args=DEFAULT_ARGS, start_date=START_DATE, schedule=data_interval_schedule("@daily"), catchup=False,
     max_active_runs=1, tags=["recsys", "two_tower", "training"], doc_md=__doc__, params=step_params("two_tower"))
def two_tower() -> None:
    @task
    def experiments(**context) -> list[str]:
        return step_parts("two_tower", context)

    @task(max_active_tis_per_dagrun=1)
    def train(name: str, **context) -> dict:
        return run_part("two_tower", context, name)

    @task
    def promote(trained: list[dict], **context) -> dict:
        return finish_step("two_tower", context, trained)

    promote(train.expand(name=experiments()))


two_tower()
