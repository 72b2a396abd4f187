"""The chain is declared in the DAGs: every produced dataset is an asset, consumers are scheduled on them."""

from __future__ import annotations

import pytest

from recsys_notify.core.datasets import CATALOGUE, produced_by
from recsys_notify.core.step import STEPS
from tests.airflow_stack import REPO


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _outlets(dag) -> dict[str, set[str]]:
    return {t.task_id: {a.name for a in t.outlets} for t in dag.tasks if t.outlets}


@pytest.mark.parametrize("step", [s for s in STEPS if produced_by(s)])
def test_final_task_of_each_step_emits_every_dataset_it_produces(dags, step):
    outlets = _outlets(dags[step])
    assert len(outlets) == 1, outlets  # one task publishes the step's outputs
    assert next(iter(outlets.values())) == {d.name for d in produced_by(step)}


def test_every_catalogue_dataset_has_a_known_producer():
    producers = set(STEPS) | {"ingest", "synthetic"}
    assert {d.producer for d in CATALOGUE.values()} <= producers


def test_consumers_are_scheduled_on_their_upstream_assets_and_time(dags):
    from airflow.sdk.definitions.timetables.assets import AssetOrTimeSchedule

    for dag_id, upstream in (("gem", {"pairs"}), ("notifications", {"user_medoids"})):
        schedule = dags[dag_id].timetable
        assert isinstance(schedule, AssetOrTimeSchedule), dag_id  # asset-driven, still time-based for backfills
        condition = schedule.asset_condition
        assert ({a.name for a in condition.objects} if hasattr(condition, "objects") else {condition.name}) == upstream
    assert not any(t.task_type.endswith("Sensor") or "sensor" in t.task_type.lower()
                   for d in dags.values() for t in d.tasks), "no polling sensors: consumers follow assets"
