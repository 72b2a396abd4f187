"""The global-medoid refresh schedule comes from config: changing it changes the parsed DAG's timetable."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.airflow_stack import REPO

DAG_FILE = REPO / "dags" / "global_medoids.py"


def _parse(settings_env, **overrides: str):
    """Parse dags/global_medoids.py the way the dag-processor does, with settings from the environment."""
    from airflow.dag_processing.dagbag import DagBag

    settings_env(**overrides)
    bag = DagBag(dag_folder=str(DAG_FILE))
    return bag.dags.get("global_medoids"), bag.import_errors


def _timetable(dag):
    """The timetable the scheduler works with: the one in the serialized DAG."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).timetable


def _runs(dag, after: datetime, n: int = 3) -> list[datetime]:
    """The next ``n`` logical dates the scheduler would create after ``after``."""
    from airflow.timetables.base import TimeRestriction

    timetable = _timetable(dag)
    restriction = TimeRestriction(earliest=after, latest=None, catchup=True)
    out, last = [], None
    for _ in range(n):
        info = timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction)
        out.append(info.logical_date)
        last = info.data_interval
    return out


@pytest.mark.parametrize("schedule, cron, expected", [
    ("@daily", "0 0 * * *", ["2026-11-02", "2026-11-03", "2026-11-04"]),
    ("0 6 * * 1", "0 6 * * 1", ["2026-11-02T06", "2026-11-09T06", "2026-11-16T06"]),
])
def test_schedule_setting_drives_the_timetable(settings_env, schedule, cron, expected):
    default, errors = _parse(settings_env)
    assert not errors, errors
    changed, errors = _parse(settings_env, global_medoids__schedule=schedule)
    assert not errors, errors
    assert _timetable(changed).summary == cron != _timetable(default).summary
    after = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    got = [d.isoformat() for d in _runs(changed, after)]
    assert [g[: len(e)] for g, e in zip(got, expected)] == expected
    assert _runs(default, after) != _runs(changed, after)


def test_default_schedule_is_weekly(settings_env):
    dag, errors = _parse(settings_env)
    assert not errors, errors
    days = _runs(dag, datetime(2026, 11, 1, 12, tzinfo=timezone.utc))
    assert [(b - a).days for a, b in zip(days, days[1:])] == [7, 7]


def test_non_time_based_schedule_is_rejected_at_parse_time(settings_env):
    dag, errors = _parse(settings_env, global_medoids__schedule="@once")
    assert dag is None
    assert "global_medoids.schedule must be time-based" in "".join(errors.values())
