"""Data contract: every bad-input kind is quarantined with its reason or fails the partition by name."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core.contract import ContractError, embedding_matrix, ingest, validate
from recsys_notify.core.storage import MissingPartitionError

DAY = date(2026, 11, 2)
ITEMS = np.array([1007, 1014, 1021, 1028], dtype=np.int64)


def events(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.arange(n, dtype=np.int64) + 500,
        "item_id": ITEMS[np.arange(n) % len(ITEMS)],
        "session_id": np.arange(n, dtype=np.int64) * 1024,
        "ts": pd.Timestamp("2026-11-02T08:00Z") + pd.to_timedelta(np.arange(n), unit="min"),
        "watch_time_s": np.full(n, 10.0),
        "duration_s": np.full(n, 20.0),
        "liked": np.zeros(n, dtype=bool),
        "shared": np.zeros(n, dtype=bool),
    })


def items(n: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "item_id": np.arange(n, dtype=np.int64) * 7 + 1007,
        "creator_id": np.ones(n, dtype=np.int64),
        "language": ["en"] * n,
        "duration_s": np.full(n, 30.0),
        "created_ts": pd.Timestamp("2026-11-02T01:00Z") + pd.to_timedelta(np.arange(n), unit="s"),
        "caption": ["cats #cats"] * n,
        "embedding": list(rng.normal(size=(n, 128)).astype(np.float32)),
    })


def users(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.arange(n, dtype=np.int64) + 500,
        "language": ["en"] * n,
        "signup_ts": pd.Timestamp("2025-01-01T00:00Z") + pd.to_timedelta(np.arange(n), unit="D"),
    })


def only_reason(result, reason: str, rows: int = 1) -> None:
    assert result.counts == {reason: rows}
    assert result.quarantine["reason"].tolist() == [reason] * rows
    assert result.invalid_rows == rows


def test_valid_events_get_contract_types_and_completion():
    result = validate("events", events(), DAY, ITEMS)
    assert result.invalid_rows == 0 and result.counts == {}
    v = result.valid
    assert str(v["ts"].dtype) == "datetime64[us, UTC]"
    assert v["user_id"].dtype == np.int64 and v["liked"].dtype == bool
    assert v["completion"].tolist() == [0.5] * 10


@pytest.mark.parametrize("column", ["user_id", "item_id", "session_id"])
def test_null_key_is_quarantined(column):
    df = events()
    df[column] = df[column].astype("float64")
    df.loc[3, column] = np.nan
    result = validate("events", df, DAY, ITEMS)
    only_reason(result, f"null {column}")
    assert result.quarantine[column].isna().all()
    assert len(result.valid) == 9 and result.valid[column].dtype == np.int64


def test_null_ts_and_keys_of_items_and_users():
    df = events()
    df.loc[0, "ts"] = pd.NaT
    only_reason(validate("events", df, DAY, ITEMS), "null ts")
    it = items()
    it["item_id"] = it["item_id"].astype("float64")
    it.loc[1, "item_id"] = np.nan
    only_reason(validate("items", it), "null item_id")
    us = users()
    us["user_id"] = us["user_id"].astype("float64")
    us.loc[2, "user_id"] = np.nan
    only_reason(validate("users", us), "null user_id")


def test_negative_and_impossible_times():
    df = events(20)
    df.loc[0, "watch_time_s"] = -1.0
    df.loc[1, "duration_s"] = 0.0
    df.loc[2, "duration_s"] = -5.0
    df.loc[3, "watch_time_s"] = 40.0  # completion 2.0
    df.loc[4, "ts"] = pd.Timestamp("2026-11-03T00:00Z")
    df.loc[5, "watch_time_s"] = np.nan
    result = validate("events", df, DAY, ITEMS)
    assert result.quarantine["reason"].tolist() == [
        "negative watch_time_s", "duration_s <= 0", "duration_s <= 0", "completion > 1.5 (clock skew)",
        "ts outside partition 2026-11-02", "watch_time_s is NaN"]
    assert result.counts == {"completion > 1.5 (clock skew)": 1, "duration_s <= 0": 2, "negative watch_time_s": 1,
                             "ts outside partition 2026-11-02": 1, "watch_time_s is NaN": 1}
    it = items()
    it.loc[0, "duration_s"] = -3.0
    only_reason(validate("items", it), "duration_s <= 0")


def test_bad_embeddings_are_quarantined_with_readable_values():
    it = items()
    it.at[0, "embedding"] = np.full(128, np.nan, dtype=np.float32)
    it.at[1, "embedding"] = np.ones(127, dtype=np.float32)
    it.at[2, "embedding"] = None
    it.at[3, "embedding"] = np.zeros(128, dtype=np.float32)
    emb = np.ones(128, dtype=np.float32)
    emb[5] = np.inf
    it.at[4, "embedding"] = emb
    result = validate("items", it)
    assert result.quarantine["reason"].tolist() == [
        "embedding has NaN or inf", "embedding length 127 != 128", "embedding missing", "embedding all zeros",
        "embedding has NaN or inf"]
    q = result.quarantine
    assert q.loc[0, "embedding"].startswith("[nan, nan, ")
    assert q.loc[1, "embedding"].startswith("[1.0, 1.0, ") and q.loc[1, "embedding"].count(",") == 126
    assert pd.isna(q.loc[2, "embedding"])
    assert "inf" in q.loc[4, "embedding"]
    assert all(len(e) == 128 and e.dtype == np.float32 for e in result.valid["embedding"])


def test_events_for_unknown_items():
    df = events()
    df.loc[[2, 7], "item_id"] = 999_999
    result = validate("events", df, DAY, ITEMS)
    only_reason(result, "unknown item_id", rows=2)
    assert result.quarantine["item_id"].tolist() == ["999999", "999999"]


def test_duplicates_keep_the_first_copy():
    df = pd.concat([events(), events().iloc[[4]]], ignore_index=True)
    result = validate("events", df, DAY, ITEMS)
    only_reason(result, "duplicate event")
    assert len(result.valid) == 10
    it = pd.concat([items(), items().iloc[[0]]], ignore_index=True)
    only_reason(validate("items", it), "duplicate item_id")
    us = pd.concat([users(), users().iloc[[9]]], ignore_index=True)
    only_reason(validate("users", us), "duplicate user_id")


def test_unknown_language_is_quarantined():
    us = users()
    us.loc[0, "language"] = "xx"
    only_reason(validate("users", us), "unknown language code")


def test_missing_columns_fail_naming_them():
    with pytest.raises(ContractError) as err:
        validate("events", events().drop(columns=["liked", "shared"]), DAY, ITEMS)
    assert str(err.value) == "events: missing column(s) liked, shared (10 rows rejected)"
    with pytest.raises(ContractError, match=r"^items: missing column\(s\) embedding \(10 rows rejected\)$"):
        validate("items", items().drop(columns="embedding"))


def test_wrong_types_fail_naming_the_column():
    df = events()
    df["liked"] = df["liked"].astype("int64")
    with pytest.raises(ContractError, match=r"^events: column liked has wrong type: expected bool, got int64$"):
        validate("events", df, DAY, ITEMS)
    df = events()
    df["user_id"] = df["user_id"].astype(str)
    with pytest.raises(ContractError, match=r"^events: column user_id has wrong type: expected integers"):
        validate("events", df, DAY, ITEMS)
    us = users()
    us["signup_ts"] = 12345
    message = r"^users: column signup_ts has wrong type: expected timestamps, got int64$"
    with pytest.raises(ContractError, match=message):
        validate("users", us)


def test_mostly_invalid_partition_fails_with_counts():
    df = events()
    df.loc[:5, "item_id"] = 5
    df.loc[6, "watch_time_s"] = -2.0
    with pytest.raises(ContractError) as err:
        validate("events", df, DAY, ITEMS)
    assert str(err.value) == ("events: 7 of 10 rows invalid (more than 50%); nothing written. "
                              "Reasons: negative watch_time_s: 1, unknown item_id: 6")
    assert validate("events", df, DAY, ITEMS, max_invalid_fraction=0.8).invalid_rows == 7


def test_empty_partition_and_unknown_dataset_fail():
    with pytest.raises(ContractError, match=r"^events: partition 2026-11-02 is empty \(0 rows\)$"):
        validate("events", events(0), DAY, ITEMS)
    with pytest.raises(ContractError, match=r"unknown dataset 'clicks'"):
        validate("clicks", events())


def test_ingest_writes_valid_rows_and_quarantine(storage):
    ingest(storage, "items", DAY, items(4))
    df = events()
    df.loc[0, "watch_time_s"] = -1.0
    df.loc[1, "item_id"] = 1
    stats = ingest(storage, "events", DAY, df)  # known items come from the items dataset
    assert stats == {"rows": 8, "quarantined": 2, "reasons": {"negative watch_time_s": 1, "unknown item_id": 1}}
    assert len(storage.read("events", DAY)) == 8
    quarantine = storage.read("events_quarantine", DAY)
    assert quarantine["reason"].tolist() == ["negative watch_time_s", "unknown item_id"]
    assert quarantine["watch_time_s"].tolist() == ["-1.0", "10.0"]


def test_ingest_of_blocks_sums_counts(storage):
    ingest(storage, "items", DAY, items(4))
    a, b = events(10), events(10)
    b["user_id"] += 100
    b.loc[0, "item_id"] = 3
    stats = ingest(storage, "events", DAY, iter([a, b]))
    assert stats == {"rows": 19, "quarantined": 1, "reasons": {"unknown item_id": 1}}
    assert len(storage.files("events", DAY)) == 2


def test_failed_ingest_writes_nothing(storage):
    ingest(storage, "items", DAY, items(4))
    with pytest.raises(ContractError, match="missing column"):
        ingest(storage, "events", DAY, events().drop(columns="ts"))
    good, bad = events(), events()
    bad["user_id"] += 100
    bad["item_id"] = 5
    with pytest.raises(ContractError, match="10 of 10 rows invalid"):
        ingest(storage, "events", DAY, iter([good, bad]))  # first block was fine, still nothing committed
    with pytest.raises(ContractError, match=r"^events: partition 2026-11-02 is empty \(no blocks\)$"):
        ingest(storage, "events", DAY, iter([]))
    assert storage.dates("events") == [] and storage.dates("events_quarantine") == []
    with pytest.raises(MissingPartitionError, match="items has no partition on or before 2026-11-01"):
        ingest(storage, "events", date(2026, 11, 1), events())


def test_embedding_matrix_refuses_bad_vectors():
    good = items(3)["embedding"]
    assert embedding_matrix(good).shape == (3, 128)
    assert embedding_matrix(pd.Series([], dtype=object)).shape == (0, 128)
    bad = good.copy()
    bad.iloc[2] = np.ones(64, dtype=np.float32)
    with pytest.raises(ContractError, match=r"^1 embedding\(s\) invalid, first: embedding length 64 != 128 \(row 2\)$"):
        embedding_matrix(bad)
    bad.iloc[2] = np.full(128, np.nan)
    with pytest.raises(ContractError, match=r"first: embedding has NaN or inf \(row 2\)"):
        embedding_matrix(bad)
