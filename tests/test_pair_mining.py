"""Pair mining phase logic on hand-built data, failure modes, ground-truth enrichment and the DAG."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core.config import ConfigError, PairMiningSettings, get_settings
from recsys_notify.core.contract import ContractError, ingest
from recsys_notify.core.datasets import TRUTH_ITEMS
from recsys_notify.core.inputs import as_of, resolve
from recsys_notify.core.sql_engine import bind, load_queries, open_engine
from recsys_notify.core.step import parse_params
from recsys_notify.core.storage import MissingPartitionError, Storage
from recsys_notify.pair_mining import step as pm
from recsys_notify.pair_mining.evaluation import same_topic_share
from recsys_notify.pair_mining.mining import similarity_buckets

DT = date(2026, 11, 14)
DAY0 = DT - timedelta(days=1)


def _vec(*hot: int) -> np.ndarray:
    v = np.zeros(128, dtype=np.float32)
    v[list(hot)] = 1.0
    return v


# items 1 and 2 point the same way (cosine 1), the others are orthogonal to them
VECTORS = {1: _vec(0), 2: _vec(0), 3: _vec(1), 4: _vec(2), 5: _vec(3), 6: _vec(4), 7: _vec(5), 8: _vec(6)}


def _write_items(storage: Storage, ids: list[int]) -> None:
    ingest(storage, "items", DAY0, pd.DataFrame({
        "item_id": ids, "creator_id": [i % 3 + 1 for i in ids], "language": "en", "duration_s": 10.0,
        "created_ts": pd.Timestamp(DAY0, tz="UTC"), "caption": "c",
        "embedding": [VECTORS.get(i, _vec(7)) for i in ids],
    }))


def _write_events(storage: Storage, rows: list[tuple], known: list[int]) -> None:
    """rows: (day, user, item, session, watch_s, liked); every item lasts 10 s."""
    frame = pd.DataFrame(rows, columns=["day", "user_id", "item_id", "session_id", "watch_time_s", "liked"])
    frame["duration_s"] = 10.0
    frame["shared"] = False
    for day, part in frame.groupby("day"):
        part = part.reset_index(drop=True)
        part["ts"] = pd.Timestamp(day, tz="UTC") + pd.to_timedelta(np.arange(len(part)), unit="s")
        ingest(storage, "events", day, part.drop(columns="day"), known_items=np.array(known))


POS, NEG, NEUTRAL = 10.0, 1.0, 5.0  # watch seconds of a 10 s item: completion 1.0 / 0.1 / 0.5

HAND_EVENTS = [
    # u1: positives 1,2,3; negatives 4,5 in session 11 and 6 in session 12; item 7 watched twice at 50% -> positive
    (DAY0, 1, 1, 11, POS, False), (DT, 1, 2, 12, POS, False), (DT, 1, 3, 12, POS, False),
    (DAY0, 1, 4, 11, NEG, False), (DAY0, 1, 5, 11, NEG, False), (DT, 1, 6, 12, NEG, False),
    (DAY0, 1, 7, 11, NEUTRAL, False), (DT, 1, 7, 12, NEUTRAL, False),
    # u2: positives 1 (liked though skipped: liked wins), 2; negatives 4,5 in one session; 8 neutral
    (DT, 2, 1, 21, NEG, True), (DT, 2, 2, 21, POS, False), (DT, 2, 4, 22, NEG, False), (DT, 2, 5, 22, NEG, False),
    (DT, 2, 8, 22, NEUTRAL, False),
    # u3: only positives (share 1.0 > 0.9): dropped with all rows
    (DT, 3, 1, 31, POS, False), (DT, 3, 2, 31, POS, False), (DT, 3, 3, 31, POS, False),
    # u5: negatives 4,5 together in two sessions (one client), one positive
    (DAY0, 5, 4, 51, NEG, False), (DAY0, 5, 5, 51, NEG, False), (DT, 5, 4, 52, NEG, False),
    (DT, 5, 5, 52, NEG, False), (DT, 5, 3, 52, POS, False),
]


@pytest.fixture
def hand_world(storage):
    _write_items(storage, list(range(1, 9)))
    _write_events(storage, HAND_EVENTS, known=list(range(1, 9)))
    return storage


def _mine(storage: Storage, **overrides):
    cfg = PairMiningSettings(**{"window_days": 2, **overrides})
    with open_engine("duckdb") as engine:
        return pm.compute_pairs(storage, DT, cfg, engine)


def _pairs(result) -> set[tuple]:
    return {(r["item1"], r["item2"], r["pair_type"], r["num_clients"]) for r in result.pairs.to_pylist()}


def test_labels_and_client_filter(hand_world):
    result = _mine(hand_world, min_clients=1)
    labels = {(r["user_id"], r["item_id"]): r["label"] for r in result.interactions.to_pylist()}
    assert labels == {
        (1, 1): "positive", (1, 2): "positive", (1, 3): "positive", (1, 7): "positive",
        (1, 4): "negative", (1, 5): "negative", (1, 6): "negative",
        (2, 1): "positive", (2, 2): "positive", (2, 4): "negative", (2, 5): "negative",
        (5, 3): "positive", (5, 4): "negative", (5, 5): "negative",
    }
    row = next(r for r in result.interactions.to_pylist() if (r["user_id"], r["item_id"]) == (1, 7))
    assert (row["events"], row["watch_time_s"], row["completion"]) == (2, 10.0, 1.0)
    s = result.stats
    assert s["window_events"] == len(HAND_EVENTS)
    assert s["removed_neutral"] == 1  # u2's item 8 (u1's item 7 sums to a full watch)
    assert (s["removed_high_positive_share_clients"], s["removed_high_positive_share_rows"]) == (1, 3)
    assert s["interaction_clients"] == 3


def test_pair_semantics(hand_world):
    result = _mine(hand_world, min_clients=1)
    pairs = _pairs(result)
    # positives join on client: u1 gives all pairs of {1,2,3,7}, u2 gives (1,2); u3 was dropped
    assert {p for p in pairs if p[2] == "positive"} == {
        (1, 2, "positive", 2), (1, 3, "positive", 1), (1, 7, "positive", 1),
        (2, 3, "positive", 1), (2, 7, "positive", 1), (3, 7, "positive", 1),
    }
    # negatives join on (client, session): (4,5) by u1, u2 and u5 (two sessions, one client); not (4,6)
    assert {p for p in pairs if p[2] == "negative"} == {(4, 5, "negative", 3)}
    table = result.pairs.to_pandas()
    assert (table.item1 < table.item2).all() and not table.duplicated(["item1", "item2", "pair_type"]).any()
    assert list(table.columns) == ["item1", "item2", "pair_type", "num_clients", "content_sim", "sim_bucket"]
    sims = table.set_index(["item1", "item2"])["content_sim"]
    assert sims[(1, 2)] == pytest.approx(1.0) and sims[(4, 5)] == pytest.approx(0.0)
    assert table.set_index(["item1", "item2"])["sim_bucket"][(1, 2)] == 3


def test_min_clients(hand_world):
    result = _mine(hand_world, min_clients=2)
    assert _pairs(result) == {(1, 2, "positive", 2), (4, 5, "negative", 3)}
    assert result.stats["removed_below_min_clients"] == 5
    assert _pairs(_mine(hand_world, min_clients=4)) == set()


def _kept_items(result) -> set[int]:
    return set(result.pairs.column("item1").to_pylist()) | set(result.pairs.column("item2").to_pylist())


def test_positive_cap_is_deterministic(storage):
    _write_items(storage, list(range(1, 16)))
    heavy = [(DT, 9, i, 90, POS, False) for i in range(1, 13)]  # 12 positives, cap 4
    light = [(DT, 8, i, 80, POS, False) for i in (13, 14, 15)]  # 3 positives, under the cap
    _write_events(storage, heavy + light, known=list(range(1, 16)))
    cap = {"window_days": 1, "min_clients": 1, "max_positives_per_client": 4, "max_positive_share": 1.0}
    first, again = _mine(storage, **cap), _mine(storage, **cap)
    s = first.stats
    assert (s["clients_capped"], s["positives_before_cap"], s["positives_kept"], s["removed_by_cap"]) == (1, 15, 7, 8)
    assert first.pairs.num_rows == 6 + 3  # C(4, 2) from the capped client, C(3, 2) from the other
    assert first.pairs.equals(again.pairs)
    heavy_kept = _kept_items(first) & set(range(1, 13))
    assert len(heavy_kept) == 4 and {13, 14, 15} <= _kept_items(first)
    samples = {frozenset(_kept_items(_mine(storage, sample_seed=seed, **cap))) for seed in range(6)}
    assert len(samples) > 1  # the seed changes which positives are kept


def test_unknown_items_quarantined_or_refused(storage):
    _write_items(storage, list(range(1, 9)))
    _write_events(storage, HAND_EVENTS + [(DT, 1, 99, 12, POS, False)], known=list(range(1, 9)) + [99])
    result = _mine(storage, min_clients=1, max_unknown_item_share=0.5)
    assert result.quarantine.to_pylist() == [{"item_id": 99, "interactions": 1, "clients": 1,
                                              "reason": "unknown item_id"}]
    assert result.stats["unknown_items"] == 1 and 99 not in result.items.column("item_id").to_pylist()
    assert all(99 not in (p[0], p[1]) for p in _pairs(result))

    with pytest.raises(ContractError, match=r"1 of 8 items .* not in items .*item_id 99"):
        pm.run(storage, get_settings(), DT, {"window_days": 2})
    assert not storage.exists("pairs", DT) and not storage.exists("pair_interactions", DT)


def test_missing_events_day_inside_the_window_is_named(hand_world):
    _write_events(hand_world, [(DT - timedelta(days=3), 1, 1, 11, POS, False)], known=list(range(1, 9)))
    expected = (r"events is missing 1 day\(s\) of the window 2026-11-11\.\.2026-11-14: 2026-11-12\. "
                r"Run .*ingest events")
    with pytest.raises(MissingPartitionError, match=expected):
        pm.run(hand_world, get_settings(), DT, {"window_days": 5})
    assert not hand_world.exists("pair_interactions", DT)


def test_window_reaching_before_the_first_events_day_is_clipped(hand_world):
    result = pm.run(hand_world, get_settings(), DT, {"window_days": 5, "min_clients": 1})
    assert result.summary["window"] == ["2026-11-13", "2026-11-14"]
    assert result.inputs["events"] == ["2026-11-13", "2026-11-14"]


def test_missing_event_column_is_named(storage):
    _write_items(storage, [1, 2])
    storage.write("events", DT, pd.DataFrame({"user_id": [1], "item_id": [1], "session_id": [1]}))
    with pytest.raises(ContractError, match="events dt=2026-11-14: missing column.*watch_time_s"):
        with open_engine("duckdb") as engine:
            pm.compute_pairs(storage, DT, PairMiningSettings(window_days=1), engine)


def test_invalid_params_are_refused(settings_env):
    with pytest.raises(ConfigError, match="window_days"):
        parse_params(get_settings(), "pair_mining", {"window_days": 0})
    with pytest.raises(ConfigError, match="similarity_edges"):
        parse_params(get_settings(), "pair_mining", {"similarity_edges": [0.5, 0.2]})
    with pytest.raises(ConfigError, match=r"unknown parameter.*: window_day \("):
        parse_params(get_settings(), "pair_mining", {"window_day": 3})


def test_parameters_are_bound_not_formatted():
    sql = load_queries("pair_mining")["labeled"]
    assert ":positive_completion" in sql and "0.9" not in sql
    assert set(bind(sql, {"positive_completion": 1, "negative_watch_s": 2, "negative_completion": 3,
                          "unused": 4})) == {"positive_completion", "negative_watch_s", "negative_completion"}
    with pytest.raises(ValueError, match="negative_watch_s"):
        bind(sql, {"positive_completion": 1, "negative_completion": 3})


def test_sliced_pair_counts_equal_one_pass():
    """DuckDB counts positive pairs in item slices; every pair (negative ids too) lands in exactly one."""
    rng = np.random.default_rng(3)
    positives = pd.DataFrame({"user_id": rng.integers(0, 40, 600), "item_id": rng.integers(-50, 50, 600)})
    positives = positives.drop_duplicates(ignore_index=True)
    sql = load_queries("pair_mining")["positive_pair_counts"]
    order = "SELECT * FROM positive_pair_counts ORDER BY item1, item2"
    with open_engine("duckdb") as engine:
        engine.register_table("positives", positives)
        engine.materialize_sliced("positive_pair_counts", sql)
        sliced = engine.query(order)
        engine.materialize("positive_pair_counts", sql, {"slice": 0, "slices": 1})
        whole = engine.query(order)
    merged = positives.merge(positives, on="user_id").query("item_id_x < item_id_y")
    assert sliced.num_rows == len(merged.groupby(["item_id_x", "item_id_y"])) > 100
    assert sliced.equals(whole)


def test_similarity_buckets_clip_to_outer_edges():
    edges = [-1.0, 0.2, 0.5, 0.8, 1.0001]
    assert similarity_buckets(np.array([-1.0, 0.1999, 0.2, 0.79, 0.8, 1.0, 1.5, -2.0]), edges).tolist() == \
        [0, 0, 1, 2, 3, 3, 3, 0]


def test_positive_pairs_enriched_for_same_topic(world):
    with open_engine("duckdb") as engine:
        result = pm.compute_pairs(world, date(2026, 11, 14), PairMiningSettings(min_clients=1), engine)
    truth = resolve(world, {"t": as_of(TRUTH_ITEMS, date(2026, 11, 14))}).dimension("t", ["item_id", "topic"])
    share = same_topic_share(result.pairs.to_pandas(), truth)
    assert result.stats["pairs_positive"] > 1000 and result.stats["pairs_negative"] > 100
    assert share["positive"] > 2 * share["negative"], share


def test_dag_runs_and_tracks(world, airflow_db):
    import mlflow
    from airflow.sdk.exceptions import ParamValidationError

    from dags.pair_mining import pair_mining
    from recsys_notify.core.tracking import configure

    dag = pair_mining()
    logical = datetime(2026, 11, 14, tzinfo=timezone.utc)
    dr = dag.test(logical_date=logical, run_conf={"window_days": 5, "min_clients": 2})
    assert dr.state == "success"
    for dataset in ("pair_interactions", "pair_items", "pair_items_quarantine", "pairs"):
        assert world.exists(dataset, DT), dataset
    pairs = world.read("pairs", DT)
    assert len(pairs) > 0 and (pairs.num_clients >= 2).all()

    configure(get_settings())
    runs = mlflow.search_runs(experiment_names=["pair_mining"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["window_days"] == "5" and run.data.metrics["pairs"] == len(pairs)
    assert run.data.metrics["window_events"] > 0 and "removed_neutral" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"num_clients_hist.png", "stats.json"} <= artifacts
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert {f"events/dt={d:%Y%m%d}" for d in (DT - timedelta(days=i) for i in range(5))} <= inputs

    with pytest.raises(ParamValidationError):
        dag.test(logical_date=logical, run_conf={"window_days": 0})
