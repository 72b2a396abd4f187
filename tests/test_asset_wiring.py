"""The chain is declared in the DAGs: medoid producers emit the assets the notifications DAG is scheduled on."""

from __future__ import annotations

import pytest

from recsys_notify.dag_support import GLOBAL_MEDOIDS_ASSET, USER_MEDOIDS_ASSET
from tests.airflow_stack import REPO


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _outlet_uris(dag) -> dict[str, set[str]]:
    return {t.task_id: {a.name for a in t.outlets} for t in dag.tasks if t.outlets}


def test_medoid_dags_emit_the_assets_notifications_wait_for(dags):
    from airflow.sdk.definitions.asset import AssetAll
    from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule

    assert _outlet_uris(dags["user_medoids"]) == {"combine": {USER_MEDOIDS_ASSET}}
    assert _outlet_uris(dags["global_medoids"]) == {"refresh": {GLOBAL_MEDOIDS_ASSET}}
    schedule = dags["notifications"].timetable
    assert isinstance(schedule, AssetOrTimeSchedule)  # asset-driven, and still time-based for backfills
    condition = schedule.asset_condition
    assert isinstance(condition, AssetAll)  # both medoid datasets must be fresh, not either
    assert {a.name for a in condition.objects} == {USER_MEDOIDS_ASSET, GLOBAL_MEDOIDS_ASSET}
