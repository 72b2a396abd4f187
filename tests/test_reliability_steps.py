"""Pipeline steps under bad input and faults: missing upstream partitions, bad override params, unsafe label
rules, a retried notifications run, MLflow down mid-chain, and byte-identical reruns of the whole chain."""

from __future__ import annotations

import importlib
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from recsys_notify.core.config import ConfigError, Settings, load_settings
from recsys_notify.core.step import STEPS, parse_params
from recsys_notify.core.storage import MissingPartitionError, Storage
from tests import corruption as C
from tests.snapshots import committed_bytes

DAY = date(2026, 11, 14)
# Small, fast settings for every step; the same for both runs of the determinism check.
FAST = {
    "RECSYS__GEM__EPOCHS": "1", "RECSYS__GEM__HIDDEN_DIM": "32", "RECSYS__GEM__OUT_DIM": "32",
    "RECSYS__GEM__MAX_EVAL_ITEMS": "300", "RECSYS__GEM__NUM_THREADS": "1",
    "RECSYS__GLOBAL_MEDOIDS__K": "20", "RECSYS__GLOBAL_MEDOIDS__SILHOUETTE_SAMPLE": "200",
    "RECSYS__USER_MEDOIDS__SHARDS": "2",
}
STEP_OUTPUTS = {
    "pairs": ["pair_interactions", "pair_items", "pairs"],
    "gem": ["gem_embeddings"],
    "user_medoids": ["user_medoids"],
    "global_medoids": ["global_clusters", "global_medoids", "templates", "overrides"],
    "notify": ["outbox", "delivery_log", "delivery_feedback"],
}


def _known(key: str) -> bool:
    """Whether ``RECSYS__SECTION__FIELD`` exists in this checkout's settings (steps add fields as they land)."""
    section, field = key.removeprefix("RECSYS__").lower().split("__")
    return field in type(getattr(Settings(), section)).model_fields


def settings_for(root: Path, **extra: str) -> Settings:
    fast = {k: v for k, v in FAST.items() if _known(k)}
    return load_settings(environ={"RECSYS__DATA_ROOT": str(root), **fast, **extra})


STEP_NAMES = {"pairs": "pair_mining", "gem": "gem", "user_medoids": "user_medoids",
              "global_medoids": "global_medoids", "notify": "notifications"}


def run_step(step: str, storage: Storage, settings: Settings, params: dict | None = None) -> dict:
    """The step's ``run``, as the DAG tasks and the CLI call it; its result as the task's XCom."""
    module = importlib.import_module(STEPS[STEP_NAMES[step]].module)
    return module.run(storage, settings, DAY, params).to_dict()


@pytest.fixture(scope="module")
def medoid_root(small_world_root, tmp_path_factory) -> Path:
    """The small world plus user and global medoids for DAY (content embeddings), built once per module."""
    root = tmp_path_factory.mktemp("medoid-world") / "data"
    shutil.copytree(small_world_root, root)
    storage, settings = Storage(str(root)), settings_for(root)
    run_step("user_medoids", storage, settings)
    run_step("global_medoids", storage, settings)
    return root


@pytest.fixture
def medoid_world(medoid_root, tmp_path) -> tuple[Storage, Settings]:
    root = tmp_path / "data"
    shutil.copytree(medoid_root, root)
    return Storage(str(root)), settings_for(root)


def _written(storage: Storage, step: str) -> list[str]:
    return [d for d in STEP_OUTPUTS[step] if storage.exists(d, DAY)]


# ----- missing upstream partitions: "run X for date Y first", nothing written -----
@pytest.mark.parametrize("step,remove,message", [
    ("pairs", ["events"], r"events .*run `recsys-notify generate` or `recsys-notify ingest events`"),
    ("gem", ["pairs"], r"pairs .*run the pair_mining DAG \(`recsys-notify pair-mining`\)"),
    ("user_medoids", ["gem_embeddings"], r"gem_embeddings .*run the gem DAG \(`recsys-notify gem`\)"),
    ("global_medoids", ["user_medoids"], r"user_medoids .*run the user_medoids DAG"),
    ("notify", ["global_medoids"], r"global_medoids .*run the global_medoids DAG"),
])
def test_missing_upstream_names_the_step_to_run(world, tmp_path, step, remove, message):
    storage = world
    extra = {"RECSYS__EMBEDDING__SOURCE": "gem"} if step == "user_medoids" else {}
    settings = settings_for(Path(storage.root), **extra)
    if step == "notify":
        run_step("user_medoids", storage, settings)
    for dataset in remove:
        for day in storage.dates(dataset):
            storage.delete(dataset, day)
    with pytest.raises(MissingPartitionError, match="(?i)" + message):
        run_step(step, storage, settings)
    assert _written(storage, step) == []


def test_missing_events_day_inside_window_is_named(world):
    world.delete("events", date(2026, 11, 10))
    with pytest.raises(MissingPartitionError, match=r"events .*2026-11-10"):
        run_step("pairs", world, settings_for(Path(world.root)))
    assert _written(world, "pairs") == []


# ----- override params -----
def _override_params(item, **extra):
    return {"replace_representatives": [{"cluster_id": 0, "item_id": item}], "reason": "test",
            "requested_by": "ops@example.com", **extra}


@pytest.mark.parametrize("params,message", [
    (_override_params(-42), r"item -42 does not exist on 2026-11-14"),
    (_override_params("abc"), r"replace_representatives\.0\.item_id: Input should be a valid integer"),
    (_override_params(1.5), r"replace_representatives\.0\.item_id: Input should be a valid integer"),
    ({"block_items": ["x"], "reason": "r", "requested_by": "me"}, r"block_items\.0: Input should be a valid integer"),
    ({"block_items": [7]}, r"reason is required"),
    ({"block_items": [1], "expires": "next week", "reason": "r", "requested_by": "me"},
     r"expires: Input should be a valid date"),
    ({"replace_representative": [{"cluster_id": 0, "item_id": 1}]}, r"unknown parameter.*replace_representative "),
])
def test_bad_override_params_fail_before_anything_is_written(medoid_world, params, message):
    storage, settings = medoid_world
    before = {d: _fingerprint(storage, d) for d in STEP_OUTPUTS["global_medoids"]}
    with pytest.raises(ConfigError, match=message):
        run_step("global_medoids", storage, settings, params)
    assert {d: _fingerprint(storage, d) for d in STEP_OUTPUTS["global_medoids"]} == before


def test_override_with_blocked_item_is_refused(medoid_world):
    """An item blocked by an earlier refresh (or in the same request) cannot become a representative."""
    from datetime import timedelta

    from recsys_notify.global_medoids import overrides as ovr
    from recsys_notify.global_medoids.params import OverrideParams

    storage, settings = medoid_world
    item = int(storage.read("global_medoids", DAY)["item_id"].iloc[0])
    earlier = DAY - timedelta(days=7)
    block = OverrideParams(block_items=[item], reason="spam", requested_by="ops", run_id="earlier")
    storage.write("overrides", earlier, ovr.next_history(ovr.history(None, None, earlier, "earlier"), block, earlier))
    before = _fingerprint(storage, "global_medoids")
    for request in (_override_params(item), {**_override_params(item), "block_items": [item]}):
        with pytest.raises(ovr.OverrideError, match=rf"item {item} is blocked"):
            run_step("global_medoids", storage, settings, request)
        assert _fingerprint(storage, "global_medoids") == before
    run_step("global_medoids", storage, settings)  # a plain refresh honours the block
    assert item not in set(storage.read("global_medoids", DAY)["item_id"])


def _fingerprint(storage: Storage, dataset: str):
    from tests.test_reliability_input import fingerprint

    return fingerprint(storage, dataset, DAY) if storage.exists(dataset, DAY) else None


# ----- two-tower label rules and experiment configs -----
@pytest.mark.parametrize("rule,message", [
    ("__import__('os').system('touch {marker}')", "function calls"),
    ("open('{marker}', 'w')", "function calls"),
    ("completion.__class__.__bases__", "attribute access"),
    ("liked[0]", "subscripts"),
    ("(lambda: 1)()", "function calls|lambdas"),
    ("completion * 2 > 1", "arithmetic"),
    ("completion > 0.9; import os", "not a valid expression"),
    ("(x := 1)", "assignments"),
])
def test_label_rule_cannot_run_code(tmp_path, rule, message):
    cfg = importlib.import_module("recsys_notify.two_tower.config")
    LabelRuleError, load_experiment, parse_label_rule = cfg.LabelRuleError, cfg.load_experiment, cfg.parse_label_rule

    marker = tmp_path / "pwned"
    text = rule.format(marker=marker)
    with pytest.raises(LabelRuleError, match=message):
        parse_label_rule(text)(pd.DataFrame({"completion": [1.0], "liked": [True], "shared": [False],
                                             "watch_time_s": [3.0]}))
    with pytest.raises(ValueError, match="label_rule"):
        load_experiment("base_dedup", Settings().two_tower.configs_dir, {"label_rule": text})
    assert not marker.exists()


def test_label_rule_naming_unknown_column_is_refused():
    cfg = importlib.import_module("recsys_notify.two_tower.config")
    LabelRuleError, parse_label_rule = cfg.LabelRuleError, cfg.parse_label_rule

    with pytest.raises(LabelRuleError, match="unknown name 'secret_column'; allowed: completion"):
        parse_label_rule("secret_column > 1")


@pytest.mark.parametrize("overrides,message", [
    ({"epochz": 3}, "epochz: Extra inputs are not permitted"),
    ({"dropout": 1.5}, "dropout: Input should be less than 1"),
    ({"loss": "mse"}, "loss: Input should be 'bce' or 'sampled_softmax'"),
])
def test_experiment_config_unknown_key_or_out_of_range(overrides, message):
    load_experiment = importlib.import_module("recsys_notify.two_tower.config").load_experiment

    with pytest.raises(ValueError, match=message):
        load_experiment("base_dedup", Settings().two_tower.configs_dir, overrides)


def test_gem_params_out_of_range_are_config_errors(medoid_world):
    _, settings = medoid_world
    with pytest.raises(ConfigError, match=r"invalid gem parameter\(s\): gem.epochs"):
        parse_params(settings, "gem", {"epochs": 0})
    with pytest.raises(ConfigError, match="objective"):
        parse_params(settings, "gem", {"objective": "magic"})


def test_notify_params_out_of_range_fail_before_writing(medoid_world):
    storage, settings = medoid_world
    with pytest.raises(ValueError, match="holdout_percent"):
        run_step("notify", storage, settings, {"holdout_percent": 250})
    with pytest.raises(ValueError, match="frequency_kap"):
        run_step("notify", storage, settings, {"frequency_kap": 2})
    assert _written(storage, "notify") == []


# ----- notifications retried after a partial run -----
def test_notify_retry_after_partial_run_has_no_duplicates(medoid_world, monkeypatch):
    storage, settings = medoid_world
    first = run_step("notify", storage, settings)
    outbox = committed_bytes(storage.root, ["outbox"])
    log = storage.read("delivery_log", DAY)
    assert len(log) and not log.duplicated(["user_id"]).any()

    real_publish = Storage._publish

    def dying_publish(self, staged):
        if "/delivery_log/" in staged.target:
            raise C.KillSimulated("worker lost after the outbox was published")
        return real_publish(self, staged)

    monkeypatch.setattr(Storage, "_publish", dying_publish)
    with pytest.raises(C.KillSimulated):
        run_step("notify", storage, settings)
    monkeypatch.setattr(Storage, "_publish", real_publish)
    again = run_step("notify", storage, settings)  # the Airflow retry

    assert committed_bytes(storage.root, ["outbox"]) == outbox
    retried = storage.read("delivery_log", DAY)
    assert len(retried) == len(log) and not retried.duplicated(["user_id"]).any()
    pd.testing.assert_frame_equal(retried, log)
    assert {k: v for k, v in again.items() if not k.startswith("mlflow")} == \
           {k: v for k, v in first.items() if not k.startswith("mlflow")}
    assert again["outputs"]["delivery_log"] == len(log)
    assert C.debris(storage, "delivery_log") == [] and C.debris(storage, "outbox") == []


# ----- MLflow down -----
@pytest.mark.parametrize("step", ["pairs", "gem", "user_medoids", "global_medoids"])
def test_tracking_down_fails_clearly_and_retry_succeeds(world, monkeypatch, step):
    from recsys_notify.core.tracking import TrackingUnavailableError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    storage = world
    good = settings_for(Path(storage.root))
    if step == "global_medoids":
        run_step("user_medoids", storage, good)
    if step == "gem":
        run_step("pairs", storage, good)
    down = settings_for(Path(storage.root), RECSYS__MLFLOW_TRACKING_URI="http://127.0.0.1:1")
    with pytest.raises(TrackingUnavailableError, match="http://127.0.0.1:1 is unavailable.*retry"):
        run_step(step, storage, down)
    written = _written(storage, step)
    assert written in ([], STEP_OUTPUTS[step]), f"partial outputs {written}"  # all or nothing
    for dataset in STEP_OUTPUTS[step]:
        assert C.debris(storage, dataset) == []
    result = run_step(step, storage, good)  # the retry once the store is back
    assert result["mlflow_run_id"]
    assert _written(storage, step) == STEP_OUTPUTS[step]


# ----- determinism: the whole chain twice -----
RUN_METADATA_COLUMNS = {"run_id", "requested_at", "mlflow_run_id", "created_at", "written_at"}
RUN_METADATA_KEYS = {"mlflow_run_id", "mlflow_experiment_id", "duration_s", "seconds", "elapsed_s"}
CHAIN = ["pairs", "gem", "user_medoids", "global_medoids", "notify"]


def _run_chain(small_world_root: Path, root: Path) -> dict[str, dict]:
    shutil.copytree(small_world_root, root)
    storage = Storage(str(root))
    settings = settings_for(root, RECSYS__EMBEDDING__SOURCE="gem")
    return {step: run_step(step, storage, settings) for step in CHAIN}


def _tables(root: Path) -> dict[str, object]:
    """Committed files by logical path: raw bytes, or the table without run-metadata columns where it has any."""
    out = {}
    for key, data in committed_bytes(root).items():
        schema = pq.read_schema(pa_buffer(data))
        meta = RUN_METADATA_COLUMNS & set(schema.names)
        out[key] = pq.read_table(pa_buffer(data)).drop_columns(sorted(meta)) if meta else data
    return out


def pa_buffer(data: bytes):
    import pyarrow as pa

    return pa.BufferReader(data)


def _metrics(results: dict[str, dict], root: Path) -> dict[str, dict]:
    """Step results without run ids/timings, with the data root replaced so two roots compare equal."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in RUN_METADATA_KEYS}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value.replace(str(root), "<root>") if isinstance(value, str) else value

    return clean(results)


def test_full_chain_twice_is_byte_identical(small_world_root, tmp_path):
    first = _run_chain(small_world_root, tmp_path / "a")
    second = _run_chain(small_world_root, tmp_path / "b")
    a, b = _tables(tmp_path / "a"), _tables(tmp_path / "b")
    assert sorted(a) == sorted(b)
    for dataset in [d for step in CHAIN for d in STEP_OUTPUTS[step]]:
        assert any(k.startswith(f"{dataset}/dt=20261114/") for k in a), f"{dataset} not produced"
    different = [k for k in a if not (a[k].equals(b[k]) if hasattr(a[k], "equals") else a[k] == b[k])]
    assert different == []
    assert _metrics(first, tmp_path / "a") == _metrics(second, tmp_path / "b")
    assert first["notify"]["summary"]["notifications"] > 0 and first["pairs"]["summary"]["pairs"] > 0
