"""Sweep of all eleven configs on the small world, registry gate, champion serving, CLI and DAG."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core.config import get_settings
from recsys_notify.two_tower.config import available_experiments
from recsys_notify.two_tower.registry import gate_decision
from tests.frames import upto

DT = date(2026, 11, 14)
FAST = {"epochs": 1, "hidden": [16], "out_dim": 8, "threads": 1}


def retrain(storage, names, overrides=None):
    """The two_tower step for ``names`` with experiment overrides; returns its summary."""
    from recsys_notify.two_tower import step as tt

    return tt.run(storage, get_settings(), DT, {"experiments": names, "experiment_overrides": overrides or {}}).summary


def write_gem(storage, dt=DT):
    """A gem_embeddings partition: a fixed random rotation of the content embeddings (stands in for issue 7)."""
    from recsys_notify.core.contract import embedding_matrix

    items = upto(storage, "items", dt, columns=["item_id", "embedding"])
    rot, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(128, 128)))
    vecs = (embedding_matrix(items["embedding"]) @ rot).astype(np.float32)
    storage.write("gem_embeddings", dt, pd.DataFrame({"item_id": items["item_id"], "embedding": list(vecs)}))


def test_gate_decision_rules():
    assert gate_decision({"ndcg_10": 0.5, "auc": 0.7}, None, "ndcg_10", ["auc"], 0.01) == (True, "no current champion")
    ok, reason = gate_decision({"ndcg_10": 0.4, "auc": 0.8}, {"ndcg_10": 0.5, "auc": 0.7}, "ndcg_10", ["auc"], 0.01)
    assert not ok and "does not beat" in reason
    ok, reason = gate_decision({"ndcg_10": 0.6, "auc": 0.65}, {"ndcg_10": 0.5, "auc": 0.7}, "ndcg_10", ["auc"], 0.01)
    assert not ok and "guard auc" in reason
    assert gate_decision({"ndcg_10": 0.6, "auc": 0.695}, {"ndcg_10": 0.5, "auc": 0.7}, "ndcg_10", ["auc"], 0.01)[0]


def test_sweep_all_eleven_then_compare(world, capsys):
    from recsys_notify.cli import main
    from recsys_notify.two_tower.step import compare_table

    write_gem(world)
    settings = get_settings()
    names = available_experiments(settings.two_tower.configs_dir)
    out = retrain(world, names, FAST)
    assert [e["experiment"] for e in out["experiments"]] == names
    assert all(0.0 < e["metrics"]["auc"] < 1.0 for e in out["experiments"])
    promoted = [e for e in out["experiments"] if e["gate"]["promoted"]]
    assert promoted and promoted[0]["experiment"] == names[0]  # the first one has no champion to beat
    table = compare_table(settings, DT)
    assert sorted(table["experiment"]) == names
    assert table[["AUC", "NDCG@5", "NDCG@10", "MRR", "MAP", "CUST-MAP@10", "coverage"]].notna().all().all()
    by_name = table.set_index("experiment")
    for e in out["experiments"]:  # the table shows the best epoch's metrics, not the last epoch's
        assert by_name.loc[e["experiment"], "NDCG@10"] == pytest.approx(e["metrics"]["ndcg_10"])
    assert main(["experiments", "compare"]) == 0
    printed = capsys.readouterr().out
    assert "CUST-MAP@10" in printed and all(n in printed for n in names)


def test_gem_experiment_without_gem_embeddings_fails_clearly(world):
    from recsys_notify.core.storage import MissingPartitionError

    with pytest.raises(MissingPartitionError, match="gem_embeddings.*recsys-notify gem"):
        retrain(world, ["simclr_user_history"], FAST)


def test_worse_model_is_not_promoted_and_serving_follows_champion(world):
    import mlflow
    from mlflow import MlflowClient

    from recsys_notify.core.inputs import resolve
    from recsys_notify.two_tower.serving import load_champion

    settings = get_settings()
    assert load_champion(settings) is None
    good = retrain(world, ["base_dedup"], {"epochs": 3, "threads": 1})
    assert good["experiments"][0]["gate"]["promoted"]
    champion = load_champion(settings)
    assert champion.version == good["experiments"][0]["version"]

    # an untrained copy (learning rate ~0) is worse on the same validation impressions
    worse = retrain(world, ["base_dedup"], {"epochs": 1, "lr": 1e-9, "seed": 5, "threads": 1})
    g = worse["experiments"][0]["gate"]
    assert not g["promoted"], g
    assert g["candidate"]["ndcg_10"] <= g["champion"]["ndcg_10"]
    # one fixed evaluation set per day and deterministic scoring: the champion scores exactly as when it won
    first = good["experiments"][0]["gate"]
    assert g["eval_set"] == first["eval_set"] and g["champion"] == first["candidate"]
    assert 0.0 < g["champion"]["full_ndcg_10"] < 1.0
    client = MlflowClient(mlflow.get_tracking_uri())
    name = settings.two_tower.registered_model
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion.version
    mv = client.get_model_version_by_alias(name, "challenger")
    assert str(mv.version) == worse["experiments"][0]["version"] and "does not beat" in mv.tags["gate_reason"]

    events = world.read("events", DT, columns=["user_id", "item_id"]).head(50)
    champion = load_champion(settings)
    ranker = champion.bind(resolve(world, champion.requests(DT)))
    scores = ranker.score(events["user_id"].to_numpy(), events["item_id"].to_numpy())
    assert scores.shape == (50,) and np.isfinite(scores).all() and scores.std() > 0
    with pytest.raises(ValueError, match="not in the catalogue"):
        ranker.score(np.array([1]), np.array([10**9]))


def test_dag_runs_and_validates_params(world, airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    from recsys_notify.two_tower.serving import load_champion

    bag = DagBag(dag_folder="dags/two_tower.py")
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["two_tower"]
    logical = pd.Timestamp(DT, tz="UTC").to_pydatetime()
    dr = dag.test(logical_date=logical, run_conf={"experiments": ["base_dedup"],
                                                  "experiment_overrides": {"epochs": 1}})
    assert dr.state == "success"
    assert load_champion(get_settings()) is not None
    failed = dag.test(logical_date=logical, run_conf={"experiments": ["nope"]})
    assert failed.state == "failed"
    (plan,) = [ti for ti in failed.get_task_instances() if ti.task_id == "experiments"]
    assert plan.state == "failed" and plan.try_number == 1  # a bad param is not retried


def test_unknown_experiment_or_bad_override_fails_before_training(storage):
    with pytest.raises(ValueError, match="unknown two-tower experiment.*nope"):
        retrain(storage, ["base_dedup", "nope"])
    with pytest.raises(ValueError, match="invalid experiment config.*label_rule"):
        retrain(storage, ["base_dedup"], {"label_rule": "__import__('os')"})
    assert storage.dates("events") == []


def test_experiments_that_train_the_same_model_are_reported(storage, caplog):
    from recsys_notify.two_tower import step as tt

    names = ["dedup_user_history", "simclr_user_history"]
    params = {"experiments": names, "experiment_overrides": {"embedding_source": "content"}}
    with caplog.at_level("WARNING", logger="recsys_notify.two_tower.step"):
        assert tt.parts(storage, get_settings(), DT, params) == names
    assert "dedup_user_history, simclr_user_history train the same model" in caplog.text
    caplog.clear()
    tt.parts(storage, get_settings(), DT, {"experiments": names})
    assert "train the same model" not in caplog.text
