"""The ops console's endpoints on a real refresh: clusters, search, paging, detail, drift, request checks."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient

from recsys_notify.core.config import get_settings
from recsys_notify.global_medoids import step as gm
from recsys_notify.user_medoids import step as um

DAY = date(2026, 11, 14)
LATER = DAY + timedelta(days=1)


class _User:
    def get_name(self) -> str:
        return "ana"


@pytest.fixture(scope="module")
def refreshes(small_world_root, tmp_path_factory):
    """Two refreshes (DAY, LATER) of the small world, built once for the module (tests only read them)."""
    from recsys_notify.core.storage import Storage

    root = tmp_path_factory.mktemp("console") / "data"
    shutil.copytree(small_world_root, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS__DATA_ROOT", str(root))
        mp.setenv("RECSYS__GLOBAL_MEDOIDS__K", "12")
        get_settings.cache_clear()
        storage, settings = Storage(str(root)), get_settings()
        um.run(storage, settings, DAY, {"shards": 1})
        gm.run(storage, settings, DAY)
        gm.run(storage, settings, LATER)
        yield storage, mp
    get_settings.cache_clear()


@pytest.fixture
def client(refreshes):
    from recsys_notify.console.app import create_app, current_user

    storage, mp = refreshes
    mp.setenv("RECSYS__DATA_ROOT", storage.root_uri)  # a function-scoped settings_env may have moved it
    get_settings.cache_clear()
    app = create_app()
    app.dependency_overrides[current_user] = _User
    return TestClient(app), storage


def test_endpoints_need_the_airflow_user():
    from recsys_notify.console.app import create_app

    client = TestClient(create_app())
    assert client.get("/api/refreshes").status_code == 401
    assert client.post("/api/check", json={"date": DAY.isoformat(), "conf": {}}).status_code == 401


def test_clusters_paging_search_and_drift(client):
    client, storage = client
    listing = client.get("/api/refreshes").json()
    assert listing["user"] == "ana" and listing["dates"][:2] == [DAY.isoformat(), LATER.isoformat()]
    reps = storage.read("global_medoids", LATER)
    n = reps["cluster_id"].nunique()
    first = client.get("/api/clusters", params={"page_size": 5, "dt": LATER.isoformat()}).json()
    assert (first["dt"], first["total"], first["pages"], len(first["rows"])) == (LATER.isoformat(), n, -(-n // 5), 5)
    last = client.get("/api/clusters", params={"page_size": 5, "page": first["pages"], "dt": LATER}).json()
    assert len(last["rows"]) == n - 5 * (first["pages"] - 1)
    assert all(r["drift"] is not None and 0 <= r["drift"] < 0.05 for r in first["rows"])  # same data: tiny drift
    earliest = client.get("/api/clusters", params={"dt": DAY.isoformat()}).json()
    assert all(r["drift"] is None for r in earliest["rows"])  # the first refresh: nothing to compare with

    row = first["rows"][1]
    by_id = client.get("/api/clusters", params={"q": row["cluster_id"], "dt": LATER}).json()["rows"]
    assert [r["cluster_id"] for r in by_id] == [row["cluster_id"]]
    members = storage.read("global_clusters", LATER)
    member = int(members[members["cluster_id"] == row["cluster_id"]]["item_id"].iloc[-1])
    by_item = client.get("/api/clusters", params={"q": member, "dt": LATER}).json()["rows"]
    assert [r["cluster_id"] for r in by_item] == [row["cluster_id"]]
    keyword = row["keywords"][0]
    found = client.get("/api/clusters", params={"q": keyword, "dt": LATER}).json()["rows"]
    assert row["cluster_id"] in [r["cluster_id"] for r in found]
    assert client.get("/api/clusters", params={"dt": "2020-01-01"}).status_code == 404


def test_cluster_detail(client):
    client, storage = client
    cid = int(storage.read("global_medoids", LATER)["cluster_id"].iloc[0])
    detail = client.get(f"/api/clusters/{cid}", params={"dt": LATER}).json()
    star = [r for r in detail["representatives"] if r["language"] == "*"]
    assert len(star) == 1 and star[0]["caption"] and star[0]["image"].endswith(f"{star[0]['item_id']}.jpg")
    assert {r["language"] for r in detail["representatives"]} == {"*", *detail["languages"]}
    assert detail["templates"] and all("{" not in t["title"] + t["body"] for t in detail["templates"])
    languages = {r["language"] for r in detail["representatives"]}
    assert {t["language"] for t in detail["templates"] if t["source"] != "ops"} <= languages  # pushes it can send
    distances = [m["distance"] for m in detail["members"]]
    assert distances == sorted(distances) and len(distances) == min(8, detail["member_count"])
    assert client.get("/api/clusters/999999").status_code == 404


def test_check_answers_bad_requests_like_the_step(client):
    client, storage = client
    reps = storage.read("global_medoids", LATER)
    row = reps[reps["language"] == "*"].iloc[0]
    members = storage.read("global_clusters", LATER)
    item = int(members[(members["cluster_id"] == row["cluster_id"]) & (members["item_id"] != row["item_id"])]
               ["item_id"].iloc[0])

    def check(conf):
        return client.post("/api/check", json={"date": LATER.isoformat(), "conf": conf}).json()

    replace = {"replace_representatives": [{"cluster_id": int(row["cluster_id"]), "item_id": item}], "reason": "x"}
    assert check(replace) == {"ok": True, "problems": []}
    assert "reason is required" in check({**replace, "reason": ""})["problems"][0]
    assert "does not exist" in check({**replace, "replace_representatives": [
        {"cluster_id": int(row["cluster_id"]), "item_id": 987654321}]})["problems"][0]
    assert "is blocked" in check({**replace, "block_items": [item]})["problems"][0]
    assert "unknown parameter(s) for global_medoids: replace_representative" in check(
        {"replace_representative": [], "reason": "x"})["problems"][0]
    assert "not an override in force" in check({"revoke_overrides": ["nope"], "reason": "x"})["problems"][0]
    assert check(replace) == {"ok": True, "problems": []}
    assert storage.read("overrides", LATER).empty  # checking never writes


def test_active_overrides_are_listed(client):
    client, storage = client
    reps = storage.read("global_medoids", LATER)
    row = reps[reps["language"] == "*"].iloc[0]
    third = LATER + timedelta(days=1)  # a refresh of its own: the other tests read DAY and LATER
    gm.run(storage, get_settings(), third, {"block_items": [int(row["item_id"])], "reason": "takedown",
                                            "requested_by": "ana", "run_id": "manual__1"})
    listed = client.get("/api/clusters", params={"dt": third.isoformat()}).json()["overrides"]
    assert [(o["action"], o["item_id"], o["requested_by"], o["reason"]) for o in listed] == [
        ("block", int(row["item_id"]), "ana", "takedown")]
    detail = client.get(f"/api/clusters/{int(row['cluster_id'])}", params={"dt": third.isoformat()}).json()
    assert [o["override_id"] for o in detail["overrides"]] == [listed[0]["override_id"]]  # its item was blocked
    assert int(row["item_id"]) not in {r["item_id"] for r in detail["representatives"]}
