"""Global medoids: stable ids, exact language-aware representatives, overrides (validation, persistence, expiry)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core.config import ConfigError, get_settings, load_settings
from recsys_notify.core.embeddings import l2_normalize
from recsys_notify.core.step import parse_params
from recsys_notify.core.storage import MissingPartitionError
from recsys_notify.global_medoids import medoids as gm_compute
from recsys_notify.global_medoids import overrides as ovr
from recsys_notify.global_medoids import step as gm
from recsys_notify.global_medoids.params import OverrideParams
from recsys_notify.user_medoids import step as um
from tests.frames import upto

DAY = date(2026, 11, 14)


@pytest.fixture
def refreshed(world):
    """Small world with user medoids for DAY and k=12 global clusters."""
    settings = load_settings(environ={"RECSYS__DATA_ROOT": str(world.root), "RECSYS__GLOBAL_MEDOIDS__K": "12"})
    um.run(world, settings, DAY, {"shards": 1})
    return world, settings


def test_match_ids_recovers_permuted_previous_ids():
    rng = np.random.default_rng(0)
    prev = l2_normalize(rng.normal(size=(6, 16)).astype(np.float32))
    prev_ids = np.array([10, 11, 12, 13, 14, 20])
    perm = rng.permutation(6)
    new = l2_normalize(prev[perm] + rng.normal(0, 0.01, (6, 16)).astype(np.float32))
    extra = l2_normalize(rng.normal(size=(1, 16)).astype(np.float32))
    ids, quality = gm_compute.match_ids(np.vstack([new, extra]), np.ones(7), prev_ids, prev, max_distance=0.3)
    assert ids[:6].tolist() == prev_ids[perm].tolist()
    assert ids[6] == 21 and quality["matched"] == 6 and quality["new_clusters"] == 1
    assert 0 < quality["centroid_drift_mean"] < 0.01


def test_representatives_are_exact_medoids_per_language_and_skip_blocked():
    rng = np.random.default_rng(1)
    X = l2_normalize(rng.normal(size=(30, 8)).astype(np.float32) + np.r_[np.ones(8) * 2])
    clusters = np.repeat([5, 9], 15)
    langs = np.array(["en", "es", "en"] * 10)
    items = np.arange(30) + 100
    blocked = np.zeros(30, bool)
    reps = gm_compute.representatives(clusters, X, items, langs, blocked)
    for (c, lang), row in reps.set_index(["cluster_id", "language"]).iterrows():
        members = np.flatnonzero(clusters == c)
        cands = members if lang == "*" else members[langs[members] == lang]
        cost = (1 - X[cands] @ X[members].T).sum(axis=1)
        assert row["item_id"] == items[cands[np.argmin(cost)]]
    assert set(reps["language"]) == {"*", "en", "es"}
    best = int(reps[(reps.cluster_id == 5) & (reps.language == "*")]["item_id"].iloc[0])
    blocked[best - 100] = True
    again = gm_compute.representatives(clusters, X, items, langs, blocked)
    assert best not in set(again["item_id"])


def test_refresh_keeps_ids_stable_and_writes_outputs(refreshed):
    storage, settings = refreshed
    first = gm.run(storage, settings, DAY).summary
    second = gm.run(storage, settings, DAY + timedelta(days=1)).summary  # same user medoids
    assert second["match_rate"] == 1.0 and second["centroid_drift_max"] < 1e-4
    a = storage.read("global_medoids", DAY)
    b = storage.read("global_medoids", DAY + timedelta(days=1))
    pd.testing.assert_frame_equal(a[["cluster_id", "language", "item_id"]], b[["cluster_id", "language", "item_id"]])
    clusters = storage.read("global_clusters", DAY)
    assert clusters["item_id"].is_unique and set(clusters["item_id"]) == set(storage.read("user_medoids", DAY).item_id)
    assert len(np.stack(a["vector"].to_numpy())[0]) == settings.embedding.trimmed_dim
    assert set(a["source"]) == {"kmeans"} and first["clusters"] == 12
    templates = storage.read("templates", DAY)
    assert set(templates["cluster_id"]) == set(a["cluster_id"])


def _two_items(storage, cluster_id: int) -> tuple[int, int, str]:
    clusters = storage.read("global_clusters", DAY)
    reps = storage.read("global_medoids", DAY)
    current = int(reps[(reps.cluster_id == cluster_id) & (reps.language == "*")]["item_id"].iloc[0])
    other = int(clusters[(clusters.cluster_id == cluster_id) & (clusters.item_id != current)]["item_id"].iloc[0])
    lang = upto(storage, "items", DAY).set_index("item_id").loc[other, "language"]
    return current, other, lang


def test_override_survives_next_refresh_until_expiry(refreshed):
    storage, settings = refreshed
    gm.run(storage, settings, DAY)
    _, pick, _ = _two_items(storage, 2)
    day1, day2, day3 = (DAY + timedelta(days=i) for i in (1, 2, 3))
    req = ({"replace_representatives": [{"cluster_id": 2, "item_id": pick}],
                             "reason": "launch", "requested_by": "ana", "expires": day2.isoformat()})
    gm.run(storage, settings, day1, {**req, "run_id": "manual__1"})

    def star(day):
        reps = storage.read("global_medoids", day)
        return reps[(reps.cluster_id == 2) & (reps.language == "*")].iloc[0]

    assert (star(day1)["item_id"], star(day1)["source"]) == (pick, "override")
    gm.run(storage, settings, day2)  # plain refresh: override still in force
    assert (star(day2)["item_id"], star(day2)["source"]) == (pick, "override")
    gm.run(storage, settings, day3)  # past expiry
    assert star(day3)["source"] == "kmeans"
    audit = storage.read("overrides", day3)
    assert audit[["action", "requested_by", "reason", "run_id", "expires"]].iloc[0].tolist() == [
        "replace", "ana", "launch", "manual__1", day2.isoformat()]


def test_block_and_revoke(refreshed):
    storage, settings = refreshed
    gm.run(storage, settings, DAY)
    current, _, _ = _two_items(storage, 1)
    day1, day2 = DAY + timedelta(days=1), DAY + timedelta(days=2)
    gm.run(storage, settings, day1, {"block_items": [current], "reason": "takedown", "requested_by": "ops"})
    assert current not in set(storage.read("global_medoids", day1)["item_id"])
    oid = storage.read("overrides", day1)["override_id"].iloc[0]
    gm.run(storage, settings, day2, {"revoke_overrides": [oid], "reason": "appeal ok", "requested_by": "ops"})
    assert current in set(storage.read("global_medoids", day2)["item_id"])
    audit = storage.read("overrides", day2)
    assert audit.set_index("override_id").loc[oid, "revoked_dt"] == day2.isoformat()


@pytest.mark.parametrize("params,message", [
    ({"replace_representatives": [{"cluster_id": 2, "item_id": 999_999_999}]}, "does not exist"),
    ({"replace_representatives": [{"cluster_id": 2, "item_id": "PICK"}], "block_items": ["PICK"]}, "is blocked"),
    ({"replace_representatives": [{"cluster_id": 2, "item_id": "PICK", "language": "OTHER"}]}, "is in language"),
    ({"replace_representatives": [{"cluster_id": 4242, "item_id": "PICK"}]}, "do not exist in this refresh"),
    ({"expires": "2020-01-01", "block_items": ["PICK"]}, "before the run date"),
])
def test_invalid_override_params_fail_before_writing(refreshed, params, message):
    storage, settings = refreshed
    gm.run(storage, settings, DAY)
    _, pick, lang = _two_items(storage, 2)
    other_lang = "ja" if lang != "ja" else "ko"

    def fill(value):
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return {"PICK": pick, "OTHER": other_lang}.get(value, value) if isinstance(value, str) else value

    request = {**fill(params), "reason": "x", "requested_by": "y"}
    day1 = DAY + timedelta(days=1)
    before = {d: storage.dates(d) for d in ("global_medoids", "global_clusters", "templates", "overrides")}
    with pytest.raises(ovr.OverrideError, match=message):
        gm.run(storage, settings, day1, request)
    assert {d: storage.dates(d) for d in before} == before


def test_override_params_need_reason_and_user(settings_env):
    def check(params):
        return parse_params(get_settings(), "global_medoids", params, OverrideParams)[1]

    with pytest.raises(ConfigError, match="reason is required"):
        check({"block_items": [1], "requested_by": "x"})
    with pytest.raises(ConfigError, match="requested_by is required"):
        check({"block_items": [1], "reason": "x"})
    with pytest.raises(ConfigError, match="expires: Input should be a valid date"):
        check({"expires": "soon"})
    with pytest.raises(ConfigError, match=r"replace_representatives\.0\.item_id: Field required"):
        check({"replace_representatives": [{"cluster_id": 1}]})
    with pytest.raises(ConfigError, match=r"block_items\.0: Input should be a valid integer"):
        check({"block_items": [True], "reason": "x", "requested_by": "y"})
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) for global_medoids: replace_representative "):
        check({"replace_representative": [{"cluster_id": 1, "item_id": 2}], "reason": "x"})
    assert check({"block_items": [1], "reason": " x ", "requested_by": "ana"}).reason == "x"
    assert check({}).empty


def test_global_dag_rejects_invalid_params_in_trigger_form(airflow_db, settings_env):
    from airflow.sdk.definitions.param import ParamValidationError

    from tests.test_medoid_dags import _load

    dag = _load("global_medoids")
    with pytest.raises(ParamValidationError):
        dag.test(run_conf={"replace_representatives": [{"cluster_id": -1, "item_id": 3}]})


def test_second_trigger_same_date_keeps_first_requests_and_retry_is_idempotent(refreshed):
    storage, settings = refreshed
    gm.run(storage, settings, DAY)
    first, second, _ = _two_items(storage, 2)
    day1 = DAY + timedelta(days=1)
    block_first = ({"block_items": [first], "reason": "takedown", "requested_by": "ops"})
    gm.run(storage, settings, day1, {**block_first, "run_id": "manual__a"})
    block_second = ({"block_items": [second], "reason": "takedown 2", "requested_by": "ana"})
    gm.run(storage, settings, day1, {**block_second, "run_id": "manual__b"})
    gm.run(storage, settings, day1, {**block_second, "run_id": "manual__b"})  # retry of run b
    audit = storage.read("overrides", day1)
    assert sorted(zip(audit["run_id"], audit["item_id"].astype(int))) == [("manual__a", first), ("manual__b", second)]
    assert audit["override_id"].is_unique
    reps = set(storage.read("global_medoids", day1)["item_id"])
    assert first not in reps and second not in reps
    revoke = ({"revoke_overrides": [audit.loc[audit.run_id == "manual__a", "override_id"].iloc[0]],
                                "reason": "appeal ok", "requested_by": "ops"})
    gm.run(storage, settings, day1, {**revoke, "run_id": "manual__c"})
    gm.run(storage, settings, day1, {**revoke, "run_id": "manual__c"})  # retry: revocation not refused
    audit = storage.read("overrides", day1).set_index("run_id")
    assert audit.loc["manual__a", "revoked_run_id"] == "manual__c" and pd.isna(audit.loc["manual__b", "revoked_dt"])


def test_override_for_an_earlier_date_repairs_later_refreshes(refreshed):
    """A refresh that already ran for a later covered date is re-materialised with the override."""
    storage, settings = refreshed
    gm.run(storage, settings, DAY)
    _, pick, _ = _two_items(storage, 2)
    later, past_expiry = DAY + timedelta(days=3), DAY + timedelta(days=7)  # within max_input_age_days
    gm.run(storage, settings, later)
    gm.run(storage, settings, past_expiry)
    clusters_before = storage.read("global_clusters", later)
    request = {"replace_representatives": [{"cluster_id": 2, "item_id": pick}], "reason": "campaign",
               "requested_by": "ana", "expires": (DAY + timedelta(days=5)).isoformat(), "run_id": "manual__x"}
    result = gm.run(storage, settings, DAY + timedelta(days=1), request)
    assert result.summary["repaired_dates"] == [later.isoformat(), past_expiry.isoformat()]

    reps = storage.read("global_medoids", later).set_index(["cluster_id", "language"])
    assert (reps.loc[(2, "*"), "item_id"], reps.loc[(2, "*"), "source"]) == (pick, "override")
    assert storage.read("overrides", later)["run_id"].tolist() == ["manual__x"]
    pd.testing.assert_frame_equal(storage.read("global_clusters", later), clusters_before)  # only the override
    expired = storage.read("global_medoids", past_expiry).set_index(["cluster_id", "language"])
    assert expired.loc[(2, "*"), "source"] == "kmeans"  # past its expiry, but still in the audit trail:
    assert storage.read("overrides", past_expiry)["run_id"].tolist() == ["manual__x"]


def test_repair_is_never_skipped_by_the_drift_trigger(refreshed):
    """In drift mode a calm later refresh is skipped, but a repair re-materialises one that exists."""
    storage, settings = refreshed
    gm.run(storage, settings, DAY)
    later = DAY + timedelta(days=3)
    gm.run(storage, settings, later)
    _, pick, _ = _two_items(storage, 2)
    drift = load_settings(environ={"RECSYS__DATA_ROOT": str(storage.root), "RECSYS__GLOBAL_MEDOIDS__K": "12",
                                   "RECSYS__GLOBAL_MEDOIDS__TRIGGER": "drift"})
    request = {"replace_representatives": [{"cluster_id": 2, "item_id": pick}], "reason": "campaign",
               "requested_by": "ana", "run_id": "manual__y"}
    assert gm.run(storage, drift, DAY + timedelta(days=1), request).summary["repaired_dates"] == [later.isoformat()]
    reps = storage.read("global_medoids", later).set_index(["cluster_id", "language"])
    assert (reps.loc[(2, "*"), "item_id"], reps.loc[(2, "*"), "source"]) == (pick, "override")


def test_covered_later_dates():
    days = [DAY + timedelta(days=i) for i in (0, 3, 7, 14)]
    block = OverrideParams(block_items=[1], reason="x", requested_by="y", expires=DAY + timedelta(days=3))
    assert gm.covered_later_dates(days, DAY, OverrideParams()) == []
    assert gm.covered_later_dates(days, DAY + timedelta(days=1), block) == days[1:]  # history carried past expiry


def test_projection_draws_overrides_above_every_kmeans_point():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    override = np.array([True, False, False, False])
    gm.draw_projection(ax, np.zeros(4), np.zeros(4), np.full(4, 20.0), override)  # all at one spot
    blue, red = ax.collections
    assert red.get_zorder() > blue.get_zorder()
    assert red.get_offsets().tolist() == [[0.0, 0.0]] and len(blue.get_offsets()) == 3
    plt.close(fig)


def test_refresh_on_stale_user_medoids_fails_naming_date_and_producer(refreshed):
    storage, settings = refreshed
    gm.run(storage, settings, DAY + timedelta(days=7))  # 7 days old: the default limit, accepted
    late = date(2027, 6, 1)
    with pytest.raises(MissingPartitionError) as err:
        gm.run(storage, settings, late)
    message = str(err.value)
    assert f"user_medoids partition is {DAY}, {(late - DAY).days} days old" in message
    assert "the user_medoids DAG" in message and "global_medoids.max_input_age_days = 7" in message
    assert storage.dates("global_medoids") == [DAY + timedelta(days=7)]  # nothing committed for the late date
    relaxed = load_settings(environ={"RECSYS__DATA_ROOT": str(storage.root),
                                     "RECSYS__GLOBAL_MEDOIDS__K": "12",
                                     "RECSYS__GLOBAL_MEDOIDS__MAX_INPUT_AGE_DAYS": "365"})
    assert gm.run(storage, relaxed, late).summary["user_medoids_dt"] == DAY.isoformat()


def test_drift_trigger_skips_calm_refreshes_and_refreshes_on_drift_or_ops_request(refreshed):
    import mlflow

    from recsys_notify.notifications import step as notifications

    storage, settings = refreshed
    drift = load_settings(environ={"RECSYS__DATA_ROOT": str(storage.root), "RECSYS__GLOBAL_MEDOIDS__K": "12",
                                   "RECSYS__GLOBAL_MEDOIDS__TRIGGER": "drift"})
    first = DAY - timedelta(days=1)
    medoids = storage.read("user_medoids", DAY)
    medoids = medoids[medoids["item_id"].isin(upto(storage, "items", first)["item_id"])]
    for day in (first, DAY):  # the same medoids on both days (items that exist on both)
        storage.write("user_medoids", day, medoids)
    assert gm.run(storage, drift, first).summary["clusters"] == 12  # no previous refresh: always refreshes
    day2, day3 = DAY + timedelta(days=1), DAY + timedelta(days=2)
    calm = gm.run(storage, drift, DAY)  # nothing moved since the refresh
    assert calm.summary["skipped"] and calm.outputs == {}
    assert calm.summary["uncovered_growth"] == 0.0 and calm.summary["assignment_churn"] == 0.0
    assert storage.dates("global_medoids") == [first]
    assert notifications.resolve_inputs(storage, drift, DAY)["global_medoids"].dates == [first]  # keep the set
    run = mlflow.MlflowClient().get_run(calm.mlflow_run_id)
    assert run.data.tags["refresh"] == "skipped" and "drift below thresholds" in run.data.tags["skip_reason"]
    assert run.data.metrics["refreshed"] == 0.0

    current = int(storage.read("global_medoids", first)["item_id"].iloc[0])  # an ops request ships regardless
    ops = gm.run(storage, drift, day2, {"block_items": [current], "reason": "takedown", "requested_by": "ops"})
    assert ops.summary["refreshed"] and storage.dates("global_medoids") == [first, day2]

    items = upto(storage, "items", DAY)["item_id"].to_numpy()
    medoids["item_id"] = np.random.default_rng(0).choice(items, len(medoids))  # interests moved everywhere
    storage.write("user_medoids", day3, medoids)
    moved = gm.run(storage, drift, day3).summary
    assert moved["refreshed"] and moved["assignment_churn"] > drift.global_medoids.drift_max_churn
    assert storage.dates("global_medoids") == [first, day2, day3]


def test_skipped_step_result_marks_the_airflow_task_skipped_without_asset_events():
    from airflow.sdk.exceptions import AirflowSkipException

    from recsys_notify.core.dag_support import _published
    from recsys_notify.core.step import StepResult

    events: dict = {}
    skipped = StepResult("global_medoids", DAY, {}, {"skipped": True, "skip_reason": "drift below thresholds"},
                         mlflow_run_id="abc")
    with pytest.raises(AirflowSkipException, match="drift below thresholds.*MLflow run abc"):
        _published("global_medoids", {"outlet_events": events}, skipped)
    assert events == {}
