"""Bad input at the foundation: every case is a clear error or a counted quarantine, never a silent drop,
and a refused partition never replaces (or half-replaces) the one already committed."""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys_notify import cli
from recsys_notify.core.config import ConfigError, load_settings
from recsys_notify.core.contract import ContractError, embedding_matrix, ingest, validate
from recsys_notify.core.datasets import EVENTS, GLOBAL_MEDOIDS
from recsys_notify.core.inputs import newest, resolve, window
from recsys_notify.core.storage import MissingPartitionError, Storage, StorageError
from tests import corruption as C
from tests.frames import upto, vectors

DAY = date(2026, 11, 14)


@pytest.fixture(scope="session")
def clean(small_world_root) -> dict[str, pd.DataFrame]:
    """Small valid raw frames taken from the synthetic world (events of one day, items, users)."""
    src = Storage(str(small_world_root))
    items = upto(src, "items", DAY)
    events = src.read("events", DAY)
    events = events[events["item_id"].isin(items["item_id"])].head(300).reset_index(drop=True)
    return {
        "events": events.drop(columns=["completion"]),
        "items": items.head(300).reset_index(drop=True),
        "users": upto(src, "users", DAY).head(300).reset_index(drop=True),
        "known_items": items["item_id"].to_numpy(),
    }


def _validate(clean, dataset: str, frame: pd.DataFrame, **kw):
    dt = DAY if dataset == "events" else None
    known = clean["known_items"] if dataset == "events" else None
    return validate(dataset, frame, dt, known, **kw)


def fingerprint(storage: Storage, dataset: str, dt: date) -> tuple:
    """Manifest plus a hash of every committed file: equal fingerprints mean an untouched partition."""
    manifest = storage.manifest(dataset, dt)
    digest = hashlib.sha256()
    for path in storage.files(dataset, dt):
        with storage.fs.open(path, "rb") as fh:
            digest.update(fh.read())
    return manifest["rows"], tuple(manifest["files"]), digest.hexdigest()


def test_clean_frames_pass_untouched(clean):
    for dataset in ("events", "items", "users"):
        result = _validate(clean, dataset, clean[dataset])
        assert result.invalid_rows == 0 and result.counts == {}
        assert len(result.valid) == len(clean[dataset])


# ----- row-level problems: quarantined with a reason and a count -----
@pytest.mark.parametrize("case", C.ROW_CASES, ids=lambda c: c.name)
def test_row_corruption_is_quarantined_and_counted(clean, case):
    frame = case.corrupt(clean[case.dataset])
    result = _validate(clean, case.dataset, frame)
    assert result.counts == {case.reason: 3}
    assert list(result.quarantine["reason"]) == [case.reason] * 3
    # nothing vanished: every input row is either valid or quarantined
    assert len(result.valid) + len(result.quarantine) == len(frame)
    expected_valid = len(clean[case.dataset]) if case.added_rows else len(clean[case.dataset]) - 3
    assert len(result.valid) == expected_valid
    # the rows kept are exactly clean rows, typed to the contract
    assert _validate(clean, case.dataset, result.valid.drop(columns=["completion"], errors="ignore")).invalid_rows == 0


@pytest.mark.parametrize("case", [c for c in C.ROW_CASES if c.dataset == "events"], ids=lambda c: c.name)
def test_ingest_writes_valid_rows_and_quarantine_partition(storage, clean, case):
    frame = case.corrupt(clean["events"])
    out = ingest(storage, "events", DAY, frame, known_items=clean["known_items"])
    assert out == {"rows": len(frame) - 3, "quarantined": 3, "reasons": {case.reason: 3}}
    assert storage.manifest("events", DAY)["rows"] == len(frame) - 3
    quarantine = storage.read("events_quarantine", DAY)
    assert len(quarantine) == 3 and set(quarantine["reason"]) == {case.reason}
    assert C.debris(storage, "events") == [] and C.debris(storage, "events_quarantine") == []


# ----- partition-level problems: a clear error, nothing written, the previous partition intact -----
SCHEMA_CASES = [
    ("events", lambda df: C.drop_column(df, "watch_time_s"), "missing column(s) watch_time_s"),
    ("events", lambda df: C.drop_column(df, "user_id"), "missing column(s) user_id"),
    ("items", lambda df: C.drop_column(df, "embedding"), "missing column(s) embedding"),
    ("users", lambda df: C.drop_column(df, "language"), "missing column(s) language"),
    ("events", lambda df: C.wrong_dtype(df, "user_id"), "column user_id has wrong type"),
    ("events", lambda df: C.wrong_dtype(df, "watch_time_s"), "column watch_time_s has wrong type"),
    ("events", lambda df: C.wrong_dtype(df, "ts"), "column ts has wrong type"),
    ("events", lambda df: C.wrong_dtype(df, "liked"), "column liked has wrong type"),
    ("events", lambda df: df.assign(liked=df["liked"].astype(int)), "column liked has wrong type"),
    ("events", lambda df: df.assign(ts=np.arange(len(df))), "column ts has wrong type"),
    ("items", lambda df: df.assign(language=1), "column language has wrong type"),
    ("items", lambda df: C.wrong_dtype(df, "duration_s"), "column duration_s has wrong type"),
    ("events", lambda df: C.fractional_ids(df, "item_id"), "column item_id has wrong type: non-integer"),
    ("events", C.empty, "is empty (0 rows)"),
    ("items", C.empty, "is empty (0 rows)"),
    ("events", lambda df: C.negative_watch_time(df, n=len(df) // 2 + 1), "rows invalid (more than 50%)"),
]


@pytest.mark.parametrize("dataset,corrupt,message", SCHEMA_CASES, ids=[m for _, _, m in SCHEMA_CASES])
def test_partition_refused_before_anything_is_written(storage, clean, dataset, corrupt, message):
    previous = ingest(storage, dataset, DAY, clean[dataset], known_items=clean["known_items"])
    assert previous["quarantined"] == 0
    before = fingerprint(storage, dataset, DAY)
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        ingest(storage, dataset, DAY, corrupt(clean[dataset]), known_items=clean["known_items"])
    assert dataset in str(err.value)
    assert fingerprint(storage, dataset, DAY) == before
    assert storage.read(f"{dataset}_quarantine", DAY).empty  # the earlier clean run's, not overwritten
    assert C.debris(storage, dataset) == []


def test_mostly_invalid_partition_error_lists_reasons(clean):
    frame = C.zero_duration(C.unknown_items(clean["events"], n=100), n=80, seed=1)
    with pytest.raises(ContractError) as err:
        _validate(clean, "events", frame, max_invalid_fraction=0.3)
    assert "unknown item_id" in str(err.value) and "duration_s <= 0" in str(err.value)


def test_events_outside_partition_day_are_quarantined(clean):
    frame = clean["events"].copy()
    frame.loc[:4, "ts"] = frame.loc[:4, "ts"] - pd.Timedelta(days=2)
    result = _validate(clean, "events", frame)
    assert result.counts == {f"ts outside partition {DAY}": 5}


def test_ingest_events_without_items_says_what_to_run_first(storage, clean):
    with pytest.raises(MissingPartitionError,
                       match="items has no partition on or before 2026-11-14: run `recsys-notify generate`"):
        ingest(storage, "events", DAY, clean["events"])
    assert storage.dates("events") == []


# ----- embeddings consumed downstream -----
@pytest.mark.parametrize("corrupt,message", [
    (C.embedding_nan, "embedding has NaN or inf"),
    (C.embedding_inf, "embedding has NaN or inf"),
    (C.embedding_wrong_length, "embedding length 127 != 128"),
    (C.embedding_zeros, "embedding all zeros"),
    (C.embedding_not_numeric, "embedding not numeric"),
])
def test_embedding_matrix_names_the_bad_vector(clean, corrupt, message):
    items = corrupt(clean["items"], n=2)
    first_bad = C.pick(clean["items"], 2)[0]
    with pytest.raises(ContractError, match=rf"2 embedding\(s\) invalid, first: {message} \(row {first_bad}\)"):
        embedding_matrix(items["embedding"])


def test_gem_vectors_with_nan_are_refused(storage, clean):
    gem = pd.DataFrame({"item_id": clean["items"]["item_id"],
                        "embedding": [np.asarray(v[:32], dtype=np.float32) for v in clean["items"]["embedding"]]})
    storage.write("gem_embeddings", DAY, C.embedding_nan(gem, n=1))
    with pytest.raises(ContractError, match="embedding has NaN or inf"):
        vectors(storage, DAY, source="gem", dim=16)


def test_item_vectors_for_unknown_ids_name_one(storage, clean):
    storage.write("items", DAY, clean["items"])
    with pytest.raises(ContractError, match="1 item id.* have no content embedding on 2026-11-14, e.g. -7"):
        vectors(storage, DAY, item_ids=np.array([clean["items"]["item_id"].iloc[0], -7]))


# ----- damaged partitions on disk -----
@pytest.mark.parametrize("mode", ["garbage", "truncate", "delete"])
def test_corrupt_parquet_file_is_a_storage_error_naming_the_file(storage, clean, mode):
    storage.write("items", DAY, clean["items"])
    path = C.corrupt_parquet(storage, "items", DAY, mode)
    with pytest.raises(StorageError, match=r"corrupt Parquet file .*part-00000\.parquet in items dt=2026-11-14"):
        storage.read("items", DAY)
    with pytest.raises(StorageError, match="items dt=2026-11-14"):
        upto(storage, "items", DAY)
    assert path.endswith("part-00000.parquet")
    storage.write("items", DAY, clean["items"])  # a rerun repairs it
    assert len(storage.read("items", DAY)) == len(clean["items"])


def test_corrupt_manifest_is_a_storage_error(storage, clean):
    storage.write("users", DAY, clean["users"])
    C.corrupt_manifest(storage, "users", DAY)
    with pytest.raises(StorageError, match="corrupt manifest .*users dt=2026-11-14.*rerun"):
        storage.read("users", DAY)
    storage.write("users", DAY, clean["users"])
    assert len(storage.read("users", DAY)) == len(clean["users"])


def test_missing_partitions_say_what_to_run(storage, clean):
    with pytest.raises(MissingPartitionError, match="pairs has no partition for 2026-11-14: run the pair_mining DAG"):
        storage.read("pairs", DAY)
    with pytest.raises(MissingPartitionError, match="global_medoids has no partition on or before 2026-11-14"):
        resolve(storage, {"g": newest(GLOBAL_MEDOIDS, DAY)})
    storage.write("events", date(2026, 11, 11), clean["events"].assign(ts=clean["events"]["ts"] - pd.Timedelta(days=3)))
    storage.write("events", DAY, clean["events"])
    with pytest.raises(MissingPartitionError, match=r"events is missing 2 day\(s\) of the window "
                                                    r"2026-11-11\.\.2026-11-14: 2026-11-12, 2026-11-13"):
        resolve(storage, {"e": window(EVENTS, DAY, 5)})


def test_empty_committed_partition_reads_as_empty_frame_with_columns(storage, clean):
    storage.write("events", DAY, clean["events"].iloc[:0])
    frame = storage.read("events", DAY)
    assert frame.empty and list(frame.columns) == list(clean["events"].columns)


def test_cli_ingest_reports_bad_input_and_exit_code(tmp_path, settings_env, clean, capsys):
    garbage = tmp_path / "events.parquet"
    garbage.write_bytes(b"PAR1 definitely not parquet")
    assert cli.main(["ingest", "users", str(garbage), "--date", "2026-11-14"]) == 2
    assert "error:" in capsys.readouterr().err
    bad = tmp_path / "users.parquet"
    C.drop_column(clean["users"], "signup_ts").to_parquet(bad)
    assert cli.main(["ingest", "users", str(bad), "--date", "2026-11-14"]) == 2
    assert "users: missing column(s) signup_ts" in capsys.readouterr().err


# ----- configuration -----
@pytest.mark.parametrize("text,message", [
    ("pair_mining:\n  window_dayz: 7\n", r"pair_mining.window_dayz: Extra inputs are not permitted"),
    ("colour: blue\n", r"colour: Extra inputs are not permitted"),
    ("pair_mining:\n  window_days: 0\n", r"pair_mining.window_days: Input should be greater than or equal to 1"),
    ("notifications:\n  holdout_percent: 150\n",
     r"notifications.holdout_percent: Input should be less than or equal to 100"),
    ("user_medoids:\n  algorithm: kmeans\n",
     r"user_medoids.algorithm: Input should be 'dbscan', 'hdbscan' or 'pinnersage'"),
    ("gem:\n  epochs: many\n", r"gem.epochs: Input should be a valid integer"),
    ("global_medoids:\n  schedule: '@once'\n", r"must be time-based"),
    ("data_root: ftp://host/data\n", r"data_root scheme not supported"),
    ("- just\n- a list\n", r"must contain a mapping, got list"),
    ("pair_mining: {window_days: 7\n", r"is not valid YAML"),
])
def test_bad_config_file_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(path, environ={})
    assert str(path) in str(err.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        load_settings(tmp_path / "nope.yaml", environ={})


@pytest.mark.parametrize("env,message", [
    ({"RECSYS__PAIR_MINING__WINDOW_DAYS": "-3"}, "pair_mining.window_days"),
    ({"RECSYS__NOTIFICATIONS__FREQUENCY_KAP": "2"}, "notifications.frequency_kap: Extra inputs"),
    ({"RECSYS__GEM__OUT_DIM": "[1"}, "gem.out_dim: Input should be a valid integer"),
])
def test_bad_env_override_is_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)


def test_cli_reports_config_error(tmp_path, settings_env, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("user_medoids:\n  shards: 0\n")
    assert cli.main(["--config", str(path), "partitions", "events"]) == 2
    assert "user_medoids.shards" in capsys.readouterr().err
