"""item_vectors: content vs gem source, trimming, id selection and its errors."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core.contract import ContractError, ingest
from recsys_notify.core.embeddings import l2_normalize
from recsys_notify.core.storage import MissingPartitionError
from tests.frames import vectors

D1, D2 = date(2026, 11, 1), date(2026, 11, 2)


def items(ids: list[int], day: date) -> pd.DataFrame:
    emb = np.arange(len(ids) * 128, dtype=np.float32).reshape(len(ids), 128) + 1000 * day.day
    return pd.DataFrame({
        "item_id": np.array(ids, dtype=np.int64), "creator_id": np.ones(len(ids), dtype=np.int64),
        "language": ["en"] * len(ids), "duration_s": np.full(len(ids), 10.0),
        "created_ts": pd.Timestamp(day, tz="UTC"), "caption": ["x"] * len(ids), "embedding": list(emb),
    })


@pytest.fixture
def store(storage):
    ingest(storage, "items", D1, items([10, 20], D1))
    ingest(storage, "items", D2, items([30], D2))
    return storage


def test_content_vectors_are_trimmed_in_pca_order(store):
    ids, x = vectors(store, D1, "content", dim=16)
    assert ids.tolist() == [10, 20] and x.shape == (2, 16) and x.dtype == np.float32 and x.flags.c_contiguous
    assert x[:, 0].tolist() == [1000.0, 1128.0]  # D1 rows start at 1000, 128 values per row
    ids, x = vectors(store, D2, "content", dim=None)
    assert ids.tolist() == [10, 20, 30] and x.shape == (3, 128)


def test_selected_ids_keep_the_requested_order(store):
    ids, x = vectors(store, D2, item_ids=np.array([30, 10]), dim=4)
    assert ids.tolist() == [30, 10] and x[:, :2].tolist() == [[2000.0, 2001.0], [1000.0, 1001.0]]
    with pytest.raises(ContractError, match=r"^2 item id\(s\) have no content embedding on 2026-11-01, e.g. 30$"):
        vectors(store, D1, item_ids=np.array([10, 30, 40]))


def test_gem_vectors_use_their_own_width_and_latest_partition(store):
    with pytest.raises(MissingPartitionError, match="gem_embeddings has no partition on or before 2026-11-02: "
                                                    "run the gem DAG"):
        vectors(store, D2, "gem")
    store.write("gem_embeddings", D1, pd.DataFrame({
        "item_id": np.array([10, 20, 30], dtype=np.int64),
        "embedding": list(np.ones((3, 32), dtype=np.float32) * np.arange(1, 4)[:, None]),
    }))
    ids, x = vectors(store, D2, "gem", dim=8)  # D1's model is the newest on or before D2
    assert ids.tolist() == [10, 20, 30] and x.shape == (3, 8) and x[2, 0] == 3.0
    assert vectors(store, D2, "gem", dim=None)[1].shape == (3, 32)
    with pytest.raises(ValueError, match="dim 64 is out of range for gem embeddings of width 32"):
        vectors(store, D2, "gem", dim=64)
    with pytest.raises(ValueError, match="unknown embedding source 'clip'"):
        vectors(store, D2, "clip")  # type: ignore[arg-type]


def test_a_bad_gem_vector_fails_only_a_read_that_asks_for_it(store):
    """gem vectors are written by the model, not ingested: a bad one is named when asked for, not otherwise."""
    emb = np.ones((4, 32), dtype=np.float32) * np.arange(1, 5)[:, None]
    emb[1, 3] = np.nan
    store.write("gem_embeddings", D1, pd.DataFrame({"item_id": np.array([10, 20, 30, 40], dtype=np.int64),
                                                    "embedding": [*emb[:3], emb[3, :16]]}))
    ids, x = vectors(store, D2, "gem", item_ids=np.array([30, 10]), dim=4)
    assert ids.tolist() == [30, 10] and x.tolist() == [[3.0] * 4, [1.0] * 4]
    with pytest.raises(ContractError, match=r"1 embedding\(s\) invalid, first: embedding has NaN or inf \(row 1\)"):
        vectors(store, D2, "gem", item_ids=np.array([30, 20]), dim=4)
    with pytest.raises(ContractError, match=r"^2 embedding\(s\) invalid"):  # the NaN one and the short one
        vectors(store, D2, "gem", dim=4)


def test_l2_normalize_keeps_zero_rows():
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert out.dtype == np.float32 and out.tolist() == [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
