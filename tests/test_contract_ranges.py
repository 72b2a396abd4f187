"""Contract holes: every value is checked in the type it is stored in, with explicit ranges.

Each value below used to change on the way in (wrap, overflow, vanish) or pass and break a later step;
the property test at the end generates hostile frames and checks that each row is either quarantined
with a reason or committed exactly as given.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_notify.core.contract import ContractError, embedding_matrix, ingest, validate
from tests.test_contract import DAY, events, items, only_reason


def test_uint64_ids_beyond_int64_are_quarantined_not_wrapped():
    frame = events(4)
    frame["user_id"] = np.array([1, 2, 3, 2**63 + 5], dtype=np.uint64)
    result = validate("events", frame, DAY, max_invalid_fraction=0.5)
    only_reason(result, "user_id outside the int64 range")
    assert result.valid["user_id"].tolist() == [1, 2, 3]
    assert result.quarantine["user_id"].tolist() == [str(2**63 + 5)]  # kept as given, not as a wrapped negative


def test_integral_floats_beyond_int64_are_quarantined():
    frame = events(4)
    frame["item_id"] = frame["item_id"].astype(float)
    frame.loc[3, "item_id"] = 1e19
    result = validate("events", frame, DAY)
    only_reason(result, "item_id outside the int64 range")
    assert (result.valid["item_id"] > 0).all()


def test_negative_ids_are_quarantined():
    frame = events(4)
    frame.loc[0, "session_id"] = -(2**62)
    only_reason(validate("events", frame, DAY), "negative session_id")


@pytest.mark.parametrize("value", [1e17, np.inf])
def test_durations_out_of_range_are_quarantined(value):
    frame = events(4)
    frame.loc[1, "duration_s"] = value
    only_reason(validate("events", frame, DAY), "duration_s above 86400 s or infinite")
    frame = items(4)
    frame.loc[1, "duration_s"] = value
    only_reason(validate("items", frame), "duration_s above 86400 s or infinite")


@pytest.mark.parametrize(("value", "reason"), [(1e39, "embedding overflows float32"),
                                               (1e-50, "embedding all zeros in float32")])
def test_embeddings_are_checked_as_float32(value, reason):
    frame = items(4)
    frame["embedding"] = [np.full(128, value, dtype=np.float64)] + list(frame["embedding"][1:])
    only_reason(validate("items", frame), reason)
    with pytest.raises(ContractError, match=reason):
        embedding_matrix(pd.Series([np.full(128, value)]))


@pytest.mark.parametrize("caption", ["a\x00b", "esc \x1b[31m", "line\r\nbreak", "safe\u202egnp.exe", "\u2066x\u2069"])
def test_captions_with_control_or_bidi_characters_are_quarantined(caption):
    frame = items(4)
    frame.loc[2, "caption"] = caption
    only_reason(validate("items", frame), "caption has control or bidi characters")


def test_text_timestamps_are_a_type_error():
    frame = events(4)
    frame["ts"] = frame["ts"].astype(str)
    with pytest.raises(ContractError, match="column ts has wrong type: expected timestamps"):
        validate("events", frame, DAY)


@pytest.mark.parametrize("fraction", [float("nan"), 7, -0.1, "0.5", True])
def test_invalid_fraction_must_be_in_0_1(storage, fraction):
    with pytest.raises(ContractError, match="max_invalid_fraction must be a number between 0 and 1"):
        validate("events", events(4), DAY, max_invalid_fraction=fraction)
    with pytest.raises(ContractError, match="max_invalid_fraction"):
        ingest(storage, "events", DAY, events(4), known_items=np.array([1007]), max_invalid_fraction=fraction)
    assert storage.dates("events") == []


# ----- property: quarantined with a reason, or committed exactly as given -----

INT_EDGES = [0, 1, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**62), -(2**63)]
FLOAT_EDGES = [0.0, -0.0, 5e-324, 1.0, 86_400.0, 86_400.5, 1e17, 1e308, float("inf"), float("-inf"), float("nan")]


def _ids(draw, n):
    kind = draw(st.sampled_from(["int64", "uint64", "float64"]))
    if kind == "int64":
        values = draw(st.lists(st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**63), 2**63 - 1))
                               .filter(lambda v: -(2**63) <= v < 2**63), min_size=n, max_size=n))
    elif kind == "uint64":
        values = draw(st.lists(st.one_of(st.sampled_from([v for v in INT_EDGES if v >= 0]),
                                         st.integers(0, 2**64 - 1)), min_size=n, max_size=n))
    else:
        values = draw(st.lists(st.one_of(st.sampled_from([float(v) for v in INT_EDGES] + [float("inf"), float("nan")]),
                                         st.integers(-(2**70), 2**70).map(float)), min_size=n, max_size=n))
    return pd.Series(values, dtype=kind)


@st.composite
def hostile_events(draw):
    n = draw(st.integers(1, 6))
    floats = st.one_of(st.sampled_from(FLOAT_EDGES), st.floats(allow_nan=True, allow_infinity=True))
    frame = pd.DataFrame({
        "user_id": _ids(draw, n), "item_id": _ids(draw, n), "session_id": _ids(draw, n),
        "ts": pd.Timestamp("2026-11-02T00:00Z") + pd.to_timedelta(
            draw(st.lists(st.integers(-3600, 90_000), min_size=n, max_size=n, unique=True)), unit="s"),
        "watch_time_s": draw(st.lists(floats, min_size=n, max_size=n)),
        "duration_s": draw(st.lists(floats, min_size=n, max_size=n)),
        "liked": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        "shared": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
    })
    return frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_events())
def test_every_row_is_quarantined_with_a_reason_or_kept_exactly(frame):
    try:
        result = validate("events", frame, DAY, max_invalid_fraction=1.0)
    except ContractError as exc:
        assert "events: column" in str(exc)  # a whole column of the wrong type
        return
    assert len(result.valid) + len(result.quarantine) == len(frame)
    assert result.quarantine["reason"].map(lambda r: isinstance(r, str) and r != "").all()
    given_rows = {ts: row for ts, row in zip(frame["ts"], frame.to_dict("records"))}  # ts is unique per row
    for row in result.valid.to_dict("records"):
        original = given_rows[row["ts"]]
        for col in ["user_id", "item_id", "session_id"]:  # no id wrapped or rounded
            assert 0 <= row[col] <= 2**63 - 1 and row[col] == int(original[col]) == original[col], col
        for col in ["watch_time_s", "duration_s"]:
            assert row[col] == original[col] and np.isfinite(row[col]) and 0 <= row[col] <= 86_400, col
        assert (row["liked"], row["shared"]) == (original["liked"], original["shared"])
        assert np.isfinite(row["completion"])


def test_big_uint64_ids_next_to_a_bad_one_stay_exact():
    frame = events(3)
    frame["user_id"] = np.array([2**53 + 1, 2**63 - 1, 2**64 - 1], dtype=np.uint64)
    result = validate("events", frame, DAY, max_invalid_fraction=0.5)
    assert result.valid["user_id"].tolist() == [2**53 + 1, 2**63 - 1]
