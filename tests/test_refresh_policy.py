"""Refresh-policy study: the replay's ordering on a drifting world, MLflow parent/child runs, bad params."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from recsys_notify.core.config import ConfigError, load_settings
from recsys_notify.core.storage import MissingPartitionError, Storage
from recsys_notify.global_medoids import study

END = date(2026, 11, 14)
START, LAST = END - timedelta(days=8), END - timedelta(days=1)  # LAST + 1 = END has events
# active users (median 150 interactions per 14 days) so next-day hit rates are not a handful of hits
DRIFT_WORLD = {"users": 1000, "items": 2000, "days": 14, "end": END, "seed": 7, "median_interactions": 150.0}


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    """A world whose interests drift fast (30% of users a day take up the trending topic), with user medoids."""
    from recsys_notify.synthetic import GeneratorConfig, generate
    from recsys_notify.user_medoids import step as um

    root = tmp_path_factory.mktemp("drift") / "data"
    storage = Storage(str(root))
    generate(storage, GeneratorConfig(**DRIFT_WORLD, interest_drift=0.3))
    settings = load_settings(environ={"RECSYS__DATA_ROOT": str(root), "RECSYS__GLOBAL_MEDOIDS__K": "40"})
    for i in range((LAST - START).days + 1):
        um.run(storage, settings, START + timedelta(days=i), {"shards": 1})
    return storage, settings


def test_fast_drift_daily_refresh_beats_weekly_and_logs_parent_with_children(drifting):
    import mlflow

    storage, settings = drifting
    result = study.run(storage, settings, {"start": START, "end": LAST, "every": [7, 1]})
    table = {row["every"]: row for row in result["table"]}
    daily, weekly = table[1], table[7]
    assert (daily["refreshes"], weekly["refreshes"]) == (8, 2)
    assert daily["evaluated"] == weekly["evaluated"] > 3000  # the same users, scored against the same next days
    assert daily["hit_rate_item"] > weekly["hit_rate_item"]
    assert daily["hit_rate_cluster"] > weekly["hit_rate_cluster"]
    assert weekly["cluster_changed"] < daily["cluster_changed"]  # a kept set changes users' clusters less
    assert result["recommended_every_days"] in (1, 7) and "refresh every" in result["recommendation"]
    assert storage.dates("global_medoids") == []  # the study never writes production data

    client = mlflow.MlflowClient()
    parent = client.get_run(result["mlflow_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.params["every"] for r in children) == ["1", "7"]
    assert all("hit_rate_item" in r.data.metrics for r in children)
    assert parent.data.tags["recommended_every_days"] == str(result["recommended_every_days"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"quality_vs_cost.png", "refresh_policy.md", "refresh_policy.json"} <= artifacts


@pytest.mark.parametrize("params,message", [
    ({"start": LAST, "end": START}, "is before start"),
    ({"start": START, "end": LAST, "every": [0]}, "every"),
    ({"end": LAST}, "start"),
])
def test_invalid_study_params_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        study.parse(params)


def test_range_with_a_missing_day_fails_before_replaying_naming_the_partition(drifting):
    storage, settings = drifting
    with pytest.raises(MissingPartitionError, match=f"user_medoids has no partition for {END}: run the user_medoids"):
        study.replay(storage, settings, study.parse({"start": LAST, "end": END}))
    storage.write("user_medoids", END, storage.read("user_medoids", LAST))
    with pytest.raises(MissingPartitionError, match=f"events has no partition for {END + timedelta(days=1)}"):
        study.replay(storage, settings, study.parse({"start": LAST, "end": END}))


def test_cli_prints_the_table_and_rejects_bad_policies(drifting, monkeypatch, capsys):
    from recsys_notify.cli import main

    storage, _ = drifting
    monkeypatch.setenv("RECSYS__DATA_ROOT", storage.root)
    monkeypatch.setenv("RECSYS__GLOBAL_MEDOIDS__K", "40")
    assert main(["refresh-policy", "--start", str(LAST), "--end", str(LAST), "--every", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "| 1 d |" in out and "| 2 d |" in out and "recommendation: refresh every" in out
    assert main(["refresh-policy", "--start", str(LAST), "--end", str(LAST), "--every", "1,x"]) == 2
    assert "error: --every must be comma-separated" in capsys.readouterr().err


def test_interest_drift_moves_users_to_the_trending_topic_and_publishes_its_videos(tmp_path):
    from recsys_notify.synthetic import GeneratorConfig, build_world, drift_interests, generate

    cfg = GeneratorConfig(users=300, items=500, days=4, seed=3, interest_drift=0.5)
    world = build_world(cfg)
    trend = world.trend_topics[0]
    assert (world.item_created_day[world.item_topic == trend] >= 0).all()  # a trend is new videos
    before = (world.user_topics == trend).any(axis=1).sum()
    moved = drift_interests(cfg, world, 1)
    assert 0.35 * 300 < len(moved) < 0.65 * 300 and (world.user_topics[moved] == trend).any(axis=1).all()
    assert (world.user_topics == trend).any(axis=1).sum() == before + len(moved)
    assert np.allclose(world.user_weights.sum(axis=1), 1.0)
    calm = build_world(GeneratorConfig(users=300, items=500, days=4, seed=3))
    assert len(drift_interests(GeneratorConfig(users=300, items=500, days=4, seed=3), calm, 1)) == 0
    storage = Storage(str(tmp_path / "w"))
    generate(storage, cfg)
    assert len(storage.dates("truth_users")) == cfg.days  # the start, then the changed users of each later day
    with pytest.raises(ValueError, match="interest_drift"):
        GeneratorConfig(interest_drift=1.5)
