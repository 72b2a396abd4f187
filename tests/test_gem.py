"""GEM: model, objectives, cold-start evaluation, output partition, CLI and DAG.

The ``pairs`` partition normally comes from pair_mining (another step); these tests write a small
one themselves with ``_test_pairs`` (a per-client self-join of positives, TEST-ONLY) that fills
exactly the documented columns.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta, timezone

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from recsys_notify.core.contract import ContractError
from recsys_notify.core.storage import MissingPartitionError, Storage
from recsys_notify.gem import step as gem_step
from tests.frames import span, upto

DT = date(2026, 11, 14)
# A world the size of the generator defaults: the 600-user fixture world has too few co-engaged
# pairs for any model to beat content (docs/gem.md); generating this one takes a few seconds.
GEM_WORLD = {"users": 2000, "items": 5000, "days": 14, "seed": 0}
QUICK_GEM = {"gem__epochs": 6, "gem__batch_size": 256, "gem__holdout_fraction": 0.3, "gem__als_factors": 32,
             "gem__experiment": "gem_test", "gem__num_threads": 1}


def _test_pairs(storage: Storage, dt: date, window_days: int = 7) -> pd.DataFrame:
    """TEST-ONLY stand-in for pair_mining: items two+ clients both watched to >= 90% are positive
    pairs; a client's kept item vs. one they dropped below 30% is a negative pair."""
    events = span(storage, "events", dt - timedelta(days=window_days - 1), dt,
                  columns=["user_id", "item_id", "completion"])
    items = upto(storage, "items", dt, columns=["item_id", "embedding"])
    con = duckdb.connect()
    con.register("events", events)
    pairs = con.execute("""
        WITH ui AS (SELECT user_id, item_id, max(completion) AS c FROM events GROUP BY ALL),
        pos AS (SELECT user_id, item_id FROM ui WHERE c >= 0.9),
        neg AS (SELECT user_id, item_id FROM ui WHERE c < 0.3)
        SELECT a.item_id AS item1, b.item_id AS item2, 'positive' AS pair_type, count(*) AS num_clients
        FROM pos a JOIN pos b ON a.user_id = b.user_id AND a.item_id < b.item_id
        GROUP BY ALL HAVING count(*) >= 2
        UNION ALL
        SELECT least(a.item_id, b.item_id), greatest(a.item_id, b.item_id), 'negative', count(*)
        FROM pos a JOIN neg b ON a.user_id = b.user_id AND a.item_id <> b.item_id
        GROUP BY ALL HAVING count(*) >= 2
        ORDER BY 1, 2, 3
    """).df()
    con.close()
    emb = np.stack(items["embedding"].to_numpy())
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = pd.Index(items["item_id"])
    a, b = index.get_indexer(pairs["item1"]), index.get_indexer(pairs["item2"])
    pairs["num_clients"] = pairs["num_clients"].astype("int64")
    pairs["content_sim"] = (emb[a] * emb[b]).sum(axis=1).astype("float64")
    pairs["sim_bucket"] = np.digitize(pairs["content_sim"], [0.2, 0.5, 0.8]).astype("int64")
    return pairs


@pytest.fixture(scope="module")
def gem_world_root(tmp_path_factory):
    """A synthetic world ending on DT plus a test-only pairs partition for DT."""
    from recsys_notify.synthetic import GeneratorConfig, generate

    root = tmp_path_factory.mktemp("gem-world") / "data"
    storage = Storage(str(root))
    generate(storage, GeneratorConfig(**GEM_WORLD, end=DT))
    storage.write("pairs", DT, _test_pairs(storage, DT))
    return root


@pytest.fixture
def gem_world(gem_world_root, settings_env, tmp_path):
    """Private copy of the world with pairs, configured as the data root with a small, quick GEM."""
    target = tmp_path / "data"
    shutil.copytree(gem_world_root, target)
    settings_env(**QUICK_GEM)
    return Storage(str(target))


def _settings():
    from recsys_notify.core.config import get_settings

    return get_settings()


# ---------------------------------------------------------------- model / objectives
def test_model_shapes_start_as_content_and_are_seeded():
    from recsys_notify.gem.model import build_model

    x = torch.randn(5, 128)
    a, b, c = build_model(128, 32, 16, seed=3), build_model(128, 32, 16, seed=3), build_model(128, 32, 16, seed=4)
    out = a(x)
    assert out.shape == (5, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    # untrained, the model is the truncated (PCA-ordered) content vector
    assert torch.allclose(out, torch.nn.functional.normalize(x[:, :16], dim=1), atol=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_balanced_sampler_bucket_shares():
    from recsys_notify.gem.objectives import BalancedSampler

    bucket = np.array([0] * 10 + [1] * 90)
    weight = np.ones(100)
    equal = BalancedSampler(bucket, weight, 1.0, np.random.default_rng(0)).sample(20_000)
    natural = BalancedSampler(bucket, weight, 0.0, np.random.default_rng(0)).sample(20_000)
    assert abs((bucket[equal] == 0).mean() - 0.5) < 0.02
    assert abs((bucket[natural] == 0).mean() - 0.1) < 0.02
    heavy = BalancedSampler(np.zeros(2, dtype=int), np.array([1.0, 3.0]), 1.0, np.random.default_rng(0)).sample(20_000)
    assert abs((heavy == 1).mean() - 0.75) < 0.02


def test_train_pairs_is_deterministic_and_lowers_loss():
    from recsys_notify.core.config import GemSettings
    from recsys_notify.gem.data import Pairs
    from recsys_notify.gem.model import build_model
    from recsys_notify.gem.objectives import train_pairs

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    group = rng.integers(0, 10, 300)
    x = torch.from_numpy((rng.normal(size=(300, 24)) + np.eye(24)[group] * 2.0).astype(np.float32))
    left, right = rng.integers(0, 300, (2, 4000))
    keep = (group[left] == group[right]) & (left != right)
    n = int(keep.sum())
    pairs = Pairs(left[keep], right[keep], np.ones(n, bool), rng.integers(1, 5, n), rng.integers(0, 3, n))
    cfg = GemSettings(epochs=5, hidden_dim=16, batch_size=64, out_dim=8, negative_weight=0)
    runs = []
    for _ in range(2):
        model = build_model(24, 16, 8, cfg.seed)
        losses = train_pairs(model, x, pairs, cfg)
        runs.append((losses, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(p, q) for p, q in zip(runs[0][1], runs[1][1]))
    assert runs[0][0][-1] < runs[0][0][0]


# ---------------------------------------------------------------- the step end to end
def test_pairs_objective_beats_content_on_cold_start_and_covers_all_items(gem_world):
    import mlflow

    from recsys_notify.core.embeddings import VECTORS, item_vectors, vectors_request
    from recsys_notify.core.inputs import resolve

    # default epochs/batch: the quick settings beat content too, but by a thinner margin (docs/gem.md)
    step = gem_step.run(gem_world, _settings(), DT, {"epochs": 20, "batch_size": 512})
    result = {**step.summary, "mlflow_run_id": step.mlflow_run_id}
    k = _settings().gem.eval_k
    assert result["losses"][-1] < result["losses"][0]
    assert result[f"gem_recall_at_{k}"] > result[f"content_recall_at_{k}"]
    assert result["eval_items"] >= 50

    items = upto(gem_world, "items", DT, columns=["item_id"])
    out = gem_world.read("gem_embeddings", DT)
    assert sorted(out["item_id"]) == sorted(items["item_id"])
    matrix = np.stack(out["embedding"].to_numpy())
    assert matrix.shape == (len(items), 128) and matrix.dtype == np.float32 and np.isfinite(matrix).all()
    variance = matrix.var(axis=0)
    assert (np.diff(variance) <= 1e-6).all(), "columns must be PCA-ordered (most variance first)"

    # consumers switch source to gem: every item (cold ones included) has a trimmed vector
    def gem_vectors(day, **kwargs):
        return item_vectors(resolve(gem_world, {VECTORS: vectors_request("gem", day)}), "gem", **kwargs)

    ids, vectors = gem_vectors(DT, dim=16)
    assert len(ids) == len(items) and vectors.shape == (len(items), 16)
    later_ids, _ = gem_vectors(DT + timedelta(days=1), item_ids=ids[:5])
    assert list(later_ids) == list(ids[:5])

    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.params["objective"] == "pairs"
    assert run.data.metrics[f"gem_recall_at_{k}"] == pytest.approx(result[f"gem_recall_at_{k}"], abs=1e-4)
    assert "gem_style_precision_at_20" in run.data.metrics
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == 20
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"gem_training.png", "gem_summary.json"} <= artifacts
    encoder = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    content = np.stack(upto(gem_world, "items", DT, columns=["embedding"])["embedding"].to_numpy()[:4])
    served = encoder(torch.from_numpy(content.astype(np.float32))).detach().numpy()
    assert np.allclose(served, matrix[:4], atol=1e-4), "logged model reproduces the stored vectors"
    assert gem_world.manifest("gem_embeddings", DT)["metadata"]["mlflow_run_id"] == run.info.run_id


def test_als_objective_via_cli_trains_and_writes(gem_world, capsys):
    from conftest import cli_json

    from recsys_notify.cli import main

    assert main(["gem", "--date", DT.isoformat(), "--objective", "als", "--epochs", "8", "--out-dim", "32"]) == 0
    out = cli_json(capsys.readouterr().out)[0]
    result = out["summary"]
    assert result["objective"] == "als" and result["als_items"] > 100 and result["out_dim"] == 32
    assert result["losses"][-1] < result["losses"][0]
    assert out["outputs"]["gem_embeddings"] == len(upto(gem_world, "items", DT, columns=["item_id"]))
    assert np.isfinite(result["gem_recall_at_20"])


def test_missing_pairs_names_the_upstream_step(world, settings_env):
    settings_env(**QUICK_GEM)
    with pytest.raises(MissingPartitionError, match="run the pair_mining DAG .*pair-mining.* for 2026-11-14 first"):
        gem_step.run(world, _settings(), DT)
    assert not world.exists("gem_embeddings", DT)


@pytest.mark.parametrize("breakage, message", [
    (lambda p: p.drop(columns=["sim_bucket"]), "missing column.*sim_bucket"),
    (lambda p: p.assign(item1=p["item1"].where(p.index != 0, 1)), r"item1.*not in items"),
    (lambda p: p.assign(pair_type="maybe"), "pair_type must be one of"),
    (lambda p: p.assign(item1=p["item2"]), "item1 < item2"),
])
def test_bad_pairs_fail_before_writing(gem_world, breakage, message):
    gem_world.write("pairs", DT, breakage(gem_world.read("pairs", DT)))
    with pytest.raises(ContractError, match=message):
        gem_step.run(gem_world, _settings(), DT)
    assert not gem_world.exists("gem_embeddings", DT)


def test_invalid_run_params_are_rejected(gem_world):
    from recsys_notify.core.config import ConfigError

    with pytest.raises(ConfigError, match="epochs"):
        gem_step.run(gem_world, _settings(), DT, {"epochs": 0})
    with pytest.raises(ConfigError, match="out_dim .* cannot exceed gem.als_factors"):
        gem_step.run(gem_world, _settings(), DT, {"objective": "als", "out_dim": 64})
    assert not gem_world.exists("gem_embeddings", DT)


# ---------------------------------------------------------------- DAG
def test_gem_dag_runs_after_pairs(gem_world, airflow_db):
    from airflow.sdk.exceptions import ParamValidationError

    from dags.gem import gem

    dag = gem()
    logical = datetime(2026, 11, 14, tzinfo=timezone.utc)
    with pytest.raises(ParamValidationError):
        dag.test(logical_date=logical, run_conf={"objective": "word2vec"})
    dr = dag.test(logical_date=logical, run_conf={"epochs": 3, "seed": 1})
    assert dr.state == "success"
    meta = gem_world.manifest("gem_embeddings", DT)["metadata"]
    assert meta["objective"] == "pairs" and meta["mlflow_run_id"]
    ti = next(t for t in dr.get_task_instances() if t.task_id == "run")
    assert ti.state == "success"
