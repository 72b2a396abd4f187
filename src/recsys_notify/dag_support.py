"""Shared DAG wiring: default args, schedules and the run's processing date.

Kept free of heavy imports (no pandas/torch) because every DAG file imports it at parse time.
Convention: a run processes the day of its logical date. Scheduled runs use a data-interval
timetable, so the run created after a day ends has that (complete) day as its logical date; a
manual trigger or backfill for date D processes D. Asset-triggered runs (no logical date) take
the date from the triggering asset events' ``extra["dt"]``.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow.sdk import CronDataIntervalTimetable

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


def data_interval_schedule(cron: str) -> CronDataIntervalTimetable:
    """A time-based schedule (cron or preset such as ``@daily``) whose logical date is the day processed."""
    return CronDataIntervalTimetable(cron, timezone="UTC")


def run_date(context: Any) -> date:
    """The day a task processes: the logical date, else the newest ``dt`` of triggering asset events."""
    logical = context.get("logical_date")
    if logical is not None:
        return logical.date()
    days = []
    for events in (context.get("triggering_asset_events") or {}).values():
        days += [e.extra["dt"] for e in events if e.extra and "dt" in e.extra]
    if not days:
        raise ValueError("run has no logical date and no triggering asset event carries extra['dt']")
    return max(date.fromisoformat(d) for d in days)


# Assets the medoid DAGs emit (with ``extra={"dt": "YYYY-MM-DD"}``) and the notifications DAG waits for.
USER_MEDOIDS_ASSET = "recsys://user_medoids"
GLOBAL_MEDOIDS_ASSET = "recsys://global_medoids"
