"""GEM training: maps every item's content embedding into the collaborative space, after pair_mining.

Waits for the run date's ``pairs`` partition, trains the generic embedding model on it (objective
``pairs`` or ``als``), writes ``gem_embeddings`` for every item known on that date and logs the run
to MLflow (experiment ``settings.gem.experiment``). Logic lives in ``recsys_notify.gem.training``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, PokeReturnValue, dag, task

from recsys_notify.config import get_settings
from recsys_notify.dag_support import DEFAULT_ARGS, START_DATE, data_interval_schedule, run_date

_GEM = get_settings().gem


@dag(
    dag_id="gem_training",
    description="Train the generic embedding model (content -> collaborative) and write gem_embeddings",
    default_args=DEFAULT_ARGS,
    start_date=START_DATE,
    schedule=data_interval_schedule(_GEM.schedule),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "embeddings", "training"],
    doc_md=__doc__,
    params={
        "objective": Param(_GEM.objective, type="string", enum=["pairs", "als"],
                           description="pairs: contrastive on mined pairs; als: distil ALS item factors"),
        "epochs": Param(_GEM.epochs, type="integer", minimum=1, maximum=500, description="training epochs"),
        "batch_size": Param(_GEM.batch_size, type="integer", minimum=8, description="pairs (or items) per step"),
        "learning_rate": Param(_GEM.learning_rate, type="number", exclusiveMinimum=0, description="AdamW learning rate"),
        "out_dim": Param(_GEM.out_dim, type="integer", minimum=1, maximum=1024,
                         description="stored embedding size (PCA components of the model output)"),
        "bucket_balance": Param(_GEM.bucket_balance, type="number", minimum=0, maximum=1,
                                description="pairs: 1 = every content-similarity bucket gets the same share, 0 = natural mix"),
        "negative_weight": Param(_GEM.negative_weight, type="number", minimum=0,
                                 description="pairs: weight of the mined-negative push-apart term"),
        "holdout_fraction": Param(_GEM.holdout_fraction, type="number", exclusiveMinimum=0, exclusiveMaximum=1,
                                  description="share of items with partners held out as cold-start probes"),
        "seed": Param(_GEM.seed, type="integer", description="random seed (same seed + data = same embeddings)"),
    },
)
def gem_training() -> None:
    @task.sensor(poke_interval=600, timeout=6 * 3600, mode="reschedule")
    def wait_for_pairs(**context: Any) -> PokeReturnValue:
        """Pairs of the run date come from pair_mining; wait for them rather than train on stale data."""
        from recsys_notify.storage import storage_from_settings

        dt = run_date(context)
        storage = storage_from_settings()
        ready = storage.exists("pairs", dt)
        if not ready:
            logging.getLogger(__name__).warning(
                "pairs for %s not there yet: run pair_mining for %s first (the DAG or `recsys-notify mine-pairs`)", dt, dt)
        return PokeReturnValue(is_done=ready)

    @task(execution_timeout=timedelta(hours=6))
    def train(**context: Any) -> dict[str, Any]:
        from recsys_notify.gem.training import train_gem
        from recsys_notify.storage import storage_from_settings

        result = train_gem(storage_from_settings(), run_date(context), **dict(context["params"]))
        result.pop("losses", None)
        return result

    wait_for_pairs() >> train()


gem_training()
