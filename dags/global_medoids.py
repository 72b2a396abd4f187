"""Global medoid refresh with ops overrides; the schedule comes from ``global_medoids.schedule``.

Trigger with params to change what ships: ``replace_representatives`` pins an item as a
cluster's representative (optionally for one language), ``block_items`` keeps items out,
``revoke_overrides`` ends earlier overrides; ``reason`` and ``requested_by`` are required with
any of them and ``expires`` (inclusive) bounds them. ``validate_overrides`` rejects bad params
before anything is computed or written; overrides persist in the ``overrides`` dataset (audit
trail) and apply to every later refresh until they expire.

Scheduled runs refresh on the last complete day of their data interval (a weekly run created after
the week ends uses that week's newest user medoids); manual triggers refresh their logical date.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from recsys_notify.config import get_settings
from recsys_notify.dag_support import (DEFAULT_ARGS, GLOBAL_MEDOIDS_ASSET, START_DATE, data_interval_schedule,
                                       run_date)

GLOBAL_MEDOIDS = Asset(GLOBAL_MEDOIDS_ASSET)

REPLACEMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "cluster_id": {"type": "integer", "minimum": 0},
        "item_id": {"type": "integer", "minimum": 0},
        "language": {"type": "string", "description": "language code, or * for the cross-language row"},
    },
    "required": ["cluster_id", "item_id"],
    "additionalProperties": False,
}


def _request(context: dict[str, Any]) -> Any:
    from recsys_notify.overrides import parse_request

    return parse_request(context["params"], default_user=getattr(context.get("dag_run"), "triggering_user_name", None))


def _refresh_day(context: dict[str, Any]) -> date:
    """Scheduled/backfill runs refresh on the last day of their interval (for ``@weekly``, the week's last
    complete day, not its first); a manual trigger refreshes its logical date like every other DAG."""
    dag_run, end = context.get("dag_run"), context.get("data_interval_end")
    run_type = getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", None))
    if run_type in ("scheduled", "backfill") and end is not None:
        return max(run_date(context), (end - timedelta(days=1)).date())
    return run_date(context)


def _no_retry_on_bad_params(fn: Any) -> Any:
    """Invalid override params or ops templates will not fix themselves: fail the task without retries."""
    from functools import wraps

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from recsys_notify.overrides import OverrideError
        from recsys_notify.templates import TemplateError

        try:
            return fn(*args, **kwargs)
        except (OverrideError, TemplateError) as exc:
            raise AirflowFailException(str(exc)) from exc

    return wrapper


@dag(
    dag_id="global_medoids",
    schedule=data_interval_schedule(get_settings().global_medoids.schedule),
    start_date=START_DATE,
    catchup=False,
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    tags=["recsys", "medoids", "ops"],
    doc_md=__doc__,
    params={
        "replace_representatives": Param([], type="array", items=REPLACEMENT_SCHEMA,
                                         description='Pin representatives, e.g. [{"cluster_id": 3, "item_id": 1049, '
                                                     '"language": "*"}]'),
        "block_items": Param([], type="array", items={"type": "integer", "minimum": 0},
                             description="Item ids that must never be a representative"),
        "revoke_overrides": Param([], type="array", items={"type": "string"},
                                  description="override_id values (from the overrides dataset) to end now"),
        "reason": Param("", type="string", maxLength=500, description="Why (required with any override)"),
        "expires": Param(None, type=["string", "null"], format="date",
                         description="Last day the overrides apply (YYYY-MM-DD); empty = until revoked"),
        "requested_by": Param(None, type=["string", "null"],
                              description="Who asks (defaults to the triggering user)"),
    },
)
def global_medoids() -> None:
    @task
    @_no_retry_on_bad_params
    def validate_overrides(**context: Any) -> dict[str, Any]:
        from recsys_notify import global_medoids as gm
        from recsys_notify.storage import storage_from_settings

        settings = get_settings()
        return gm.check_request(storage_from_settings(settings), settings, _refresh_day(context), _request(context),
                                context["run_id"])

    @task(outlets=[GLOBAL_MEDOIDS])
    @_no_retry_on_bad_params
    def refresh(checked: dict[str, Any], **context: Any) -> dict[str, Any]:
        from recsys_notify import global_medoids as gm
        from recsys_notify.storage import storage_from_settings

        settings = get_settings()
        day = _refresh_day(context)
        result = gm.refresh(storage_from_settings(settings), settings, day, _request(context),
                            run_id=context["run_id"])
        context["outlet_events"][GLOBAL_MEDOIDS].extra = {"dt": day.isoformat()}  # consumers process this day
        return result

    refresh(validate_overrides())


global_medoids_dag = global_medoids()
