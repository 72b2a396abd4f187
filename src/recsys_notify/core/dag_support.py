"""Everything Airflow-specific: schedules, the run's date, Params and Assets from the catalogue, step tasks.

Kept free of heavy imports (no pandas/torch at import) because every DAG file imports it at parse time.

The day a run processes: a scheduled or backfill run processes the last complete day of its data
interval (for ``@daily`` its logical date, for ``@weekly`` the week's last day); a manual trigger
processes its logical date; an asset-triggered run (no logical date) the newest ``dt`` its triggering
asset events carry. Dates are UTC days.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from airflow.sdk import Asset, AssetOrTimeSchedule, CronDataIntervalTimetable, Param

from recsys_notify.core.config import get_settings
from recsys_notify.core.datasets import Dataset, produced_by
from recsys_notify.core.step import STEPS, StepSpec

# Airflow logs whatever a task writes to stderr at ERROR. MLflow writes its log records and artifact
# progress bars there by default, so successful tasks showed ERROR lines: let MLflow's records go through
# Airflow's logging at their own level, and drop the bars. (Read when mlflow is first imported, in tasks.)
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

OWNER = "recsys"
DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
}
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ----- schedules and dates -----

def data_interval_schedule(cron: str) -> CronDataIntervalTimetable:
    """A time-based schedule (cron or preset such as ``@daily``) whose data interval is the days processed."""
    return CronDataIntervalTimetable(cron, timezone="UTC")


def after(cron: str, *datasets: Dataset) -> AssetOrTimeSchedule:
    """Run when any of ``datasets`` gets a new partition, and on ``cron`` (so dates can be backfilled)."""
    condition = asset(datasets[0])
    for ds in datasets[1:]:
        condition = condition | asset(ds)
    return AssetOrTimeSchedule(timetable=data_interval_schedule(cron), assets=condition)


def run_date(context: Mapping[str, Any]) -> date:
    """The UTC day a task processes (see the module docstring)."""
    run_type = _run_type(context)
    end = context.get("data_interval_end")
    logical = context.get("logical_date")
    if run_type in ("scheduled", "backfill") and end is not None and logical is not None:
        return max(logical.date(), (end - timedelta(days=1)).date())
    if logical is not None:
        return logical.date()
    requested = (context.get("params") or {}).get(RUN_DATE_PARAM)
    if requested:
        return date.fromisoformat(str(requested))
    days = []
    for events in (context.get("triggering_asset_events") or {}).values():
        days += [e.extra["dt"] for e in events if e.extra and "dt" in e.extra]
    if not days:
        raise ValueError("run has no logical date and no triggering asset event carries extra['dt']")
    return max(date.fromisoformat(d) for d in days)


def _run_type(context: Mapping[str, Any]) -> str | None:
    run_type = getattr(context.get("dag_run"), "run_type", None)
    return getattr(run_type, "value", run_type)


# ----- assets -----

def asset(dataset: Dataset) -> Asset:
    """The Airflow Asset of a catalogue dataset (declared here once, by name)."""
    return Asset(name=dataset.name, uri=f"recsys://{dataset.name}")


def assets_of(step: str) -> list[Asset]:
    """Assets of every dataset ``step`` produces: the outlets of its final task."""
    return [asset(d) for d in produced_by(step)]


# ----- params from the config models -----

def step_params(step: str) -> dict[str, Param]:
    """Trigger-form Params of ``step``: its config section (empty = configured value) and run-only fields."""
    spec = STEPS[step]
    settings = get_settings()
    section = getattr(settings, spec.section)
    out = {}
    schema = type(section).model_json_schema()
    for name, prop in schema["properties"].items():
        prop = _nullable(_inline(prop, schema.get("$defs", {})))
        prop["description"] = f"{prop.get('description', name)} (empty: configured value {getattr(section, name)!r})"
        out[name] = Param(None, **prop)
    run_model = spec.run_model()
    if run_model is not None:
        run_schema = run_model.model_json_schema()
        for name, prop in run_schema["properties"].items():
            if name in spec.context_fields:
                continue  # filled from the Airflow run (who triggered it, its run id)
            prop = _inline(prop, run_schema.get("$defs", {}))
            default = run_model.model_fields[name].get_default(call_default_factory=True)
            # nullable: an empty field means "not given" (the model's default), so the form never requires it
            out[name] = Param(default, **_nullable(prop))
    return out


RUN_DATE_PARAM = "date"


def run_date_param() -> dict[str, Param]:
    """The ``date`` Param: the day a manual trigger without a logical date processes.

    Airflow allows one run per logical date, so a second trigger for a day (another ops request)
    is sent with ``logical_date: null`` and ``conf.date``; its run id is unique.
    """
    return {RUN_DATE_PARAM: Param(None, type=["null", "string"], format="date",
                                  description="day to process (YYYY-MM-DD) when triggered without a logical date")}


def model_params(model: Any) -> dict[str, Param]:
    """Trigger-form Params of a pydantic model (a non-step task's params); a required field defaults to empty."""
    schema = model.model_json_schema()
    out = {}
    for name, prop in schema["properties"].items():
        prop = _inline(prop, schema.get("$defs", {}))
        field = model.model_fields[name]
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        out[name] = Param(default, **(_nullable(prop) if default is None else _without_default(prop)))
    return out


def _inline(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema with ``$ref`` to ``$defs`` replaced by the definitions (the trigger form needs them inline)."""
    if isinstance(prop, dict):
        if "$ref" in prop:
            return _inline(defs[prop["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in prop.items()}
    if isinstance(prop, list):
        return [_inline(v, defs) for v in prop]
    return prop


def _without_default(prop: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in prop.items() if k != "default"}


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """``prop`` accepting null too, as one typed schema (the trigger form needs a ``type``), without its default."""
    prop = _without_default(prop)
    if "anyOf" in prop:
        branches = [b for b in prop.pop("anyOf") if b.get("type") != "null"]
        if len(branches) == 1:
            prop = {**branches[0], **prop}
        else:
            return {**prop, "anyOf": [*branches, {"type": "null"}]}
    if "enum" in prop:
        prop["enum"] = [*prop["enum"], None]
    if "type" in prop:
        prop["type"] = [prop["type"], "null"] if isinstance(prop["type"], str) else [*prop["type"], "null"]
    return prop


# ----- running a step from a task -----

def _params(spec: StepSpec, context: Mapping[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in dict(context.get("params") or {}).items()
              if v is not None and k != RUN_DATE_PARAM}
    if "run_id" in spec.context_fields:
        params["run_id"] = context["run_id"]
    if "requested_by" in spec.context_fields and not params.get("requested_by"):
        user = getattr(context.get("dag_run"), "triggering_user_name", None)
        if user:
            params["requested_by"] = user
    return params


def _call(step: str, context: Mapping[str, Any], function: str, *args: Any, skip_missing: bool = False) -> Any:
    """Call ``function`` of the step module with (storage, settings, dt, params, *args).

    Bad params or config fail the task without retries (they will not fix themselves). With
    ``skip_missing``, a scheduled run whose upstream partition is not there yet is skipped: the
    asset-triggered run that follows the upstream's commit processes that date.
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from recsys_notify.core.config import ConfigError
    from recsys_notify.core.storage import MissingPartitionError, storage_from_settings

    spec = STEPS[step]
    module = importlib.import_module(spec.module)
    settings = get_settings()
    try:
        return getattr(module, function)(storage_from_settings(settings), settings, run_date(context),
                                         _params(spec, context), *args)
    except ConfigError as exc:
        raise AirflowFailException(f"error: {exc}") from exc
    except MissingPartitionError as exc:
        if skip_missing and _run_type(context) == "scheduled":
            raise AirflowSkipException(f"upstream not ready, the asset-triggered run will process it: {exc}") from exc
        raise


def run_study(target: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """Call ``module:function(storage, settings, params)`` (a study over a date range, not a step of one day).

    Bad params or config fail the task without retries, like a step's.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from recsys_notify.core.config import ConfigError
    from recsys_notify.core.storage import storage_from_settings

    module, function = target.split(":")
    settings = get_settings()
    params = {k: v for k, v in dict(context.get("params") or {}).items() if v is not None}
    try:
        return getattr(importlib.import_module(module), function)(storage_from_settings(settings), settings, params)
    except ConfigError as exc:
        raise AirflowFailException(f"error: {exc}") from exc


def run_step(step: str, context: Mapping[str, Any], skip_missing: bool = False) -> dict[str, Any]:
    """The whole step in one task; its outlets get ``extra={"dt": ...}`` so consumers know the date."""
    return _published(step, context, _call(step, context, "run", skip_missing=skip_missing))


def prepare_step(step: str, context: Mapping[str, Any], skip_missing: bool = False) -> dict[str, Any]:
    """What every part of a sharded step shares, computed once before them (notifications: item popularity)."""
    return dict(_call(step, context, "prepare", skip_missing=skip_missing))


def step_parts(step: str, context: Mapping[str, Any]) -> list[Any]:
    """The parts (shards, experiments) a sharded step maps over."""
    return list(_call(step, context, "parts"))


def run_part(step: str, context: Mapping[str, Any], part: Any) -> dict[str, Any]:
    return dict(_call(step, context, "run_part", part))


def finish_step(step: str, context: Mapping[str, Any], part_results: list[dict[str, Any]]) -> dict[str, Any]:
    # one slice request: iterating a lazy XCom sequence probes past its end and logs a 404
    return _published(step, context, _call(step, context, "finish", list(part_results[:])))


def _published(step: str, context: Mapping[str, Any], result: Any) -> dict[str, Any]:
    """Outlet events for the run's date; a run that decided to write nothing (``summary.skipped``) is skipped.

    A skipped task shows its state in the grid with the reason in its log, and emits no asset event,
    so consumers keep reading the previous partition.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    out = result.to_dict()
    if out["summary"].get("skipped"):
        raise AirflowSkipException(f"{step} for {out['dt']} skipped: {out['summary'].get('skip_reason', '')} "
                                   f"(MLflow run {out.get('mlflow_run_id')})")
    for outlet in assets_of(step):
        context["outlet_events"][outlet].extra = {"dt": out["dt"]}
    return out


# ----- UI links -----

def mlflow_run_url(result: Any, base_url: str) -> str | None:
    """The MLflow UI page of the run a task reported in its return value; None when it reported none."""
    if not isinstance(result, Mapping) or not result.get("mlflow_run_id"):
        return None
    base = base_url.rstrip("/")
    run_id = quote(str(result["mlflow_run_id"]), safe="")
    experiment_id = result.get("mlflow_experiment_id")
    if experiment_id in (None, ""):
        return f"{base}/#/runs/{run_id}"  # the UI redirects to the run's experiment
    return f"{base}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{run_id}"
