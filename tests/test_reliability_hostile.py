"""Hostile config, options, sizes and environments: each ends in ``error: ...`` naming the problem, exit 2."""

from __future__ import annotations

import errno
import json
import os
from datetime import date

import numpy as np
import pytest

from recsys_notify import cli
from recsys_notify.core.config import ConfigError, load_settings
from recsys_notify.core.storage import Storage, StorageError
from recsys_notify.two_tower.config import LabelRuleError, load_experiment, parse_label_rule
from tests.test_contract import users

DAY = date(2026, 11, 14)


# ----- config files -----
@pytest.mark.parametrize("text,message", [
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "storage_options: {c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]}\n", r"alias \*a is not allowed"),
    ("pair_mining:\n  window_days: 3\n  window_days: 9\n", r"duplicate key 'window_days'"),
    ("notifications:\n  thumbnail_uri: 'https://cdn/{item_id.__class__}.jpg'\n",
     r"only \{item_id\} may be substituted, got \{item_id.__class__\}"),
    ("notifications:\n  thumbnail_uri: 'https://cdn/{0}.jpg'\n", r"only \{item_id\} may be substituted, got \{0\}"),
    ("notifications:\n  thumbnail_uri: 'https://cdn/{item_id'\n", r"thumbnail_uri: .*not a valid pattern"),
    ("embedding:\n  dim: 64\n", r"embedding.dim: Extra inputs are not permitted"),
    ("embedding:\n  trimmed_dim: 512\n", r"embedding.trimmed_dim 512 is wider than the content embeddings"),
])
def test_hostile_config_is_refused_at_load(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_thumbnail_pattern_with_item_id_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("notifications:\n  thumbnail_uri: 'https://cdn/t/{item_id}.jpg'\n")
    assert load_settings(path, environ={}).notifications.thumbnail_uri.format(item_id=7) == "https://cdn/t/7.jpg"


def test_non_utf8_config_names_the_file(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"pair_mining:\n  window_days: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"config file .*config.yaml is not UTF-8 text"):
        load_settings(path, environ={})
    assert cli.main(["--config", str(path), "partitions", "events"]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_invalid_or_aliased_experiment_yaml_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    with pytest.raises(ValueError, match=r"experiment config .*bad.yaml is not valid YAML"):
        load_experiment("bad", tmp_path)
    (tmp_path / "dup.yaml").write_text("epochs: 1\nepochs: 2\n")
    with pytest.raises(ValueError, match="duplicate key 'epochs'"):
        load_experiment("dup", tmp_path)


@pytest.mark.parametrize("rule", ["(" * 3000 + "liked" + ")" * 3000, "not " * 100_000 + "liked",
                                  "not " * 300 + "liked"])
def test_deeply_nested_label_rule_is_a_label_rule_error(rule):
    with pytest.raises(LabelRuleError, match="characters long|nests"):
        parse_label_rule(rule)
    assert parse_label_rule("completion > 0.8 and (liked or shared)")({"completion": np.array([0.9]),
                                                                       "liked": np.array([True]),
                                                                       "shared": np.array([False])}).tolist() == [True]


# ----- the CLI: every failure is ``error: ...`` and exit 2 -----
def _ingest(tmp_path, *extra: str) -> list[str]:
    path = tmp_path / "users.parquet"
    users(4).to_parquet(path)
    return ["ingest", "users", str(path), "--date", "2026-11-14", *extra]


@pytest.mark.parametrize("fraction", ["nan", "7", "-1"])
def test_cli_refuses_bad_invalid_fraction(tmp_path, settings_env, capsys, fraction):
    assert cli.main(_ingest(tmp_path, "--max-invalid-fraction", fraction)) == 2
    assert "max_invalid_fraction must be a number between 0 and 1" in capsys.readouterr().err


def test_cli_missing_input_file(tmp_path, settings_env, capsys):
    assert cli.main(["ingest", "users", str(tmp_path / "nope.parquet"), "--date", "2026-11-14"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.parquet" in err and "Traceback" not in err


def test_cli_read_only_data_root(tmp_path, settings_env, capsys, monkeypatch):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    settings_env(data_root=str(root / "data"))
    argv = _ingest(tmp_path)
    if os.geteuid() == 0:  # root ignores file permissions: fail the way the kernel would for anyone else
        real = os.makedirs

        def read_only(path, *args, **kwargs):
            if str(path).startswith(str(root)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        monkeypatch.setattr(os, "makedirs", read_only)
    try:
        assert cli.main(argv) == 2
    finally:
        root.chmod(0o700)
    err = capsys.readouterr().err
    assert err.startswith("error: Permission denied: ") and str(root) in err


def test_cli_disk_full_leaves_nothing(tmp_path, settings_env, capsys, monkeypatch):
    import pyarrow.parquet as pq

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))

    argv = _ingest(tmp_path)
    monkeypatch.setattr(pq, "write_table", full)
    assert cli.main(argv) == 2
    assert "error: No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    store = Storage(str(tmp_path / "data"))
    assert store.dates("users") == [] and store.dates("users_quarantine") == []
    assert not list((tmp_path / "data").rglob(".lock-*"))


@pytest.mark.parametrize("server", ["dead", "every call 500"])
def test_cli_mlflow_server_down_or_failing(settings_env, monkeypatch, capsys, server):
    import mlflow
    from mlflow.exceptions import MlflowException

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings_env(mlflow_tracking_uri="http://127.0.0.1:9")  # nothing listens on the discard port

    def http_500(*args, **kwargs):
        raise MlflowException("API request to /api/2.0/mlflow/experiments/get-by-name failed with error code 500")

    if server != "dead":
        monkeypatch.setattr(mlflow, "get_experiment_by_name", http_500)
    assert cli.main(["experiments", "compare"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLflow tracking store failed: ") and "Traceback" not in err


def test_manifest_without_files_is_a_storage_error(tmp_path):
    store = Storage(str(tmp_path / "data"))
    store.write("users", DAY, users(2))
    manifest = tmp_path / "data" / "users" / "dt=20261114" / "_manifest.json"
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "files"}))
    with pytest.raises(StorageError, match=r"corrupt manifest .* lacks files, rows or columns"):
        store.read("users", DAY)


def test_stray_backup_partition_dir_is_ignored(tmp_path, settings_env, capsys):
    store = Storage(str(tmp_path / "data"))
    store.write("users", DAY, users(2))
    (tmp_path / "data" / "users" / "dt=20261114.bak").mkdir()
    (tmp_path / "data" / "users" / "dt=20261114.bak" / "_manifest.json").write_text("{}")
    assert store.dates("users") == [DAY]
    assert cli.main(["partitions", "users"]) == 0
    assert json.loads(capsys.readouterr().out) == ["2026-11-14"]


def _first_use(root: str) -> None:
    import mlflow

    from recsys_notify.core import tracking
    from recsys_notify.core.config import Settings

    tracking.configure(Settings(data_root=root))
    mlflow.search_experiments()


def test_concurrent_first_use_of_sqlite_store_does_not_race(tmp_path):
    import multiprocessing

    import mlflow  # noqa: F401 - imported before forking, so each child starts at once

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_first_use, args=(str(tmp_path / "data"),)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]


def test_id_index_with_ids_at_plus_minus_2_pow_62():
    from recsys_notify.notifications.arrays import IdIndex

    index = IdIndex(np.array([-(2**62), 0, 2**62], dtype=np.int64))
    pos, found = index.find(np.array([2**62, 5, -(2**62)], dtype=np.int64))
    assert found.tolist() == [True, False, True] and pos[found].tolist() == [2, 0]


@pytest.mark.parametrize("ids", [np.array([5, 3, 5, 9, 3, 5]), np.array([2**62, -(2**62), 2**62, 7])])
def test_tally_counts_like_np_unique_over_dense_and_spread_ids(ids):
    """Dense ids are counted by bincount, ids spread over +-2^62 by sorting: both give np.unique's counts."""
    from recsys_notify.notifications.arrays import tally

    item, n = tally(ids.astype(np.int64))
    want, counts = np.unique(ids, return_counts=True)
    assert item.tolist() == want.tolist() and n.tolist() == counts.tolist()
    item, n = tally(ids.astype(np.int64), np.arange(len(ids)) - 3)  # a weight sum of 0 keeps its id
    assert item.tolist() == want.tolist()
    assert n.tolist() == [int((np.arange(len(ids)) - 3)[ids == i].sum()) for i in want]
