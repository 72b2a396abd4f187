"""Daily pair mining: events of the last ``window_days`` days -> pair_interactions, pair_items, pairs.

Params default to the configured ``pair_mining`` section and override it for one run; the trigger
form validates them. The task's return value carries the counts and the MLflow run ids.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from recsys_notify.config import get_settings
from recsys_notify.dag_support import DEFAULT_ARGS, START_DATE, data_interval_schedule, run_date

PAIRS = Asset(name="pairs")
_cfg = get_settings().pair_mining


@dag(
    dag_id="pair_mining",
    description="Mine positive/negative item pairs for the generic embedding model",
    default_args=DEFAULT_ARGS,
    start_date=START_DATE,
    schedule=data_interval_schedule("@daily"),
    catchup=False,
    max_active_runs=2,
    tags=["recsys", "pairs", "gem"],
    doc_md=__doc__,
    params={
        "window_days": Param(_cfg.window_days, type="integer", minimum=1, maximum=90,
                             description="Days of events ending at the run date"),
        "min_clients": Param(_cfg.min_clients, type="integer", minimum=1,
                             description="Keep pairs seen by at least this many distinct clients"),
        "max_positives_per_client": Param(_cfg.max_positives_per_client, type="integer", minimum=2,
                                          description="Cap on a client's positives (deterministic sample)"),
        "max_positive_share": Param(_cfg.max_positive_share, type="number", exclusiveMinimum=0, maximum=1,
                                    description="Drop clients whose Pos / (Pos + Neg) is above this"),
        "positive_completion": Param(_cfg.positive_completion, type="number", minimum=0,
                                     description="Positive if completion is above this (or liked)"),
        "negative_watch_s": Param(_cfg.negative_watch_s, type="number", minimum=0,
                                  description="Negative if total watch time (s) is below this"),
        "negative_completion": Param(_cfg.negative_completion, type="number", minimum=0,
                                     description="Negative if completion is below this"),
        "engine": Param(_cfg.engine, type="string", enum=["duckdb", "spark"],
                        description="SQL engine (spark uses pair_mining.spark_master / spark_remote)"),
    },
)
def pair_mining():
    @task(outlets=[PAIRS])
    def mine_pairs(params=None, outlet_events=None, **context) -> dict:
        from recsys_notify.config import with_overrides
        from recsys_notify.pair_mining import mine_pairs as step
        from recsys_notify.storage import storage_from_settings

        settings = with_overrides(get_settings(), "pair_mining", **params)
        result = step(storage_from_settings(settings), run_date(context), settings)
        outlet_events[PAIRS].extra = {"dt": result["dt"], "pairs": result["pairs"]}
        return result

    mine_pairs()


pair_mining()
