"""Trigger-time checks: unknown conf keys refused before a run exists, optional audit fields, the ``date`` param."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from recsys_notify.console.conf_guard import UnknownConfGuard

KNOWN = {"replace_representatives", "block_items", "reason", "date"}


def _client() -> tuple[TestClient, list[dict]]:
    created: list[dict] = []

    async def trigger(request):
        created.append(await request.json())
        return JSONResponse({"dag_run_id": "r1"})

    app = Starlette(routes=[Route("/api/v2/dags/{dag_id}/dagRuns", trigger, methods=["POST"])])
    app.add_middleware(UnknownConfGuard, known_params=lambda dag_id: KNOWN if dag_id == "global_medoids" else None)
    return TestClient(app), created


def test_misspelled_conf_key_is_refused_before_the_run_exists():
    client, created = _client()
    resp = client.post("/api/v2/dags/global_medoids/dagRuns",
                       json={"logical_date": None, "conf": {"replace_representative": [], "reason": "x"}})
    assert resp.status_code == 400
    assert "replace_representative (did you mean replace_representatives?)" in resp.json()["detail"]
    assert created == []


@pytest.mark.parametrize("dag_id, conf", [
    ("global_medoids", {"block_items": [3], "reason": "x", "date": "2026-11-14"}),
    ("global_medoids", {}),
    ("a_dag_without_params", {"anything": 1}),
])
def test_known_keys_and_undeclared_dags_pass_with_the_body_intact(dag_id, conf):
    client, created = _client()
    body = {"logical_date": None, "conf": conf}
    resp = client.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body)
    assert resp.status_code == 200 and created == [body]


def test_run_params_never_required_and_date_param(settings_env):
    from recsys_notify.core import dag_support

    params = dag_support.step_params("global_medoids") | dag_support.run_date_param()
    for name in ("reason", "expires", "replace_representatives", "date"):
        assert "null" in params[name].schema["type"], name  # an empty field does not block the Trigger button
    context = {"logical_date": None, "params": {"date": "2026-11-20", "reason": None, "block_items": [4]},
               "dag_run": SimpleNamespace(run_type="manual", triggering_user_name="ana"), "run_id": "manual__x"}
    assert dag_support.run_date(context) == date(2026, 11, 20)
    spec = dag_support.STEPS["global_medoids"]
    assert dag_support._params(spec, context) == {"block_items": [4], "run_id": "manual__x", "requested_by": "ana"}
