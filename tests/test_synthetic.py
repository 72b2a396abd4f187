"""Synthetic generator: deterministic by seed, consistent with its ground truth, realistic shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_WORLD

from recsys_notify.core.contract import LANGUAGES, embedding_matrix
from recsys_notify.core.embeddings import l2_normalize
from recsys_notify.core.storage import Storage
from recsys_notify.synthetic import GeneratorConfig, build_world, events_for_day, generate
from tests.frames import span, upto
from tests.snapshots import committed_bytes

CFG = GeneratorConfig(**SMALL_WORLD)


def test_same_seed_gives_byte_identical_partitions(tmp_path):
    cfg = GeneratorConfig(users=300, items=500, days=3, seed=11)
    counts = [generate(Storage(str(tmp_path / name)), cfg) for name in ("a", "b")]
    assert counts[0] == counts[1] and counts[0]["events"] > 0
    a, b = committed_bytes(tmp_path / "a"), committed_bytes(tmp_path / "b")
    assert list(a) == list(b) and any(k.startswith("events/dt=") for k in a)
    assert a == b
    generate(Storage(str(tmp_path / "c")), GeneratorConfig(users=300, items=500, days=3, seed=12))
    part = "events/dt=20261114/part-00000.parquet"
    assert committed_bytes(tmp_path / "c")[part] != a[part]


@pytest.fixture(scope="module")
def joined(small_world_root) -> pd.DataFrame:
    """All 14 days of events joined with item and user ground truth."""
    store = Storage(str(small_world_root))
    ev = span(store, "events", CFG.start, CFG.end)
    truth_items = upto(store, "truth_items", CFG.end)
    truth_users = upto(store, "truth_users", CFG.end)
    ev = ev.merge(truth_items[["item_id", "topic", "style"]], on="item_id", validate="many_to_one")
    ev = ev.merge(truth_users, on="user_id", validate="many_to_one")
    ev["in_topics"] = [t in set(ts) for t, ts in zip(ev["topic"], ev["topics"])]
    ev["style_match"] = [s in set(ss) for s, ss in zip(ev["style"], ev["styles"])]
    ev["positive"] = (ev["completion"] >= 0.9) | ev["liked"] | ev["shared"]
    return ev


def test_partitions_cover_every_day_and_match_ground_truth(small_world_root):
    store = Storage(str(small_world_root))
    days = pd.date_range(CFG.start, CFG.end).date.tolist()
    assert store.dates("events") == days
    assert store.dates("items") == days  # new items appear every day
    assert all(store.manifest("items", d)["rows"] > 0 for d in days)
    items = upto(store, "items", CFG.end)
    truth_items = upto(store, "truth_items", CFG.end)
    assert len(items) == CFG.items and items["item_id"].is_unique
    assert sorted(items["item_id"]) == sorted(truth_items["item_id"])
    for d in days[1:]:  # each day's items are created that day and their truth is stored beside them
        day_items = store.read("items", d)
        assert (day_items["created_ts"].dt.date == d).all()
        assert sorted(day_items["item_id"]) == sorted(store.read("truth_items", d)["item_id"])
    assert embedding_matrix(items["embedding"]).shape == (CFG.items, 128)
    users = upto(store, "users", CFG.end)
    assert len(users) == CFG.users and set(users["language"]) <= LANGUAGES and users["language"].nunique() > 3
    assert all(store.read("events_quarantine", d).empty for d in days)  # the generator writes valid data


def test_truth_users_are_well_formed(small_world_root):
    truth = upto(Storage(str(small_world_root)), "truth_users", CFG.end)
    n_topics = truth["topics"].map(len)
    assert n_topics.between(1, 6).all() and set(n_topics) == {1, 2, 3, 4, 5, 6}
    assert (truth["topic_weights"].map(len) == n_topics).all()
    assert np.allclose(truth["topic_weights"].map(sum), 1.0)
    assert truth["topics"].map(lambda t: len(set(t)) == len(t)).all()
    assert truth["styles"].map(lambda s: 1 <= len(s) <= 2 and list(s) == sorted(set(s))).all()


def test_users_engage_mostly_with_their_true_topics(joined):
    assert joined["in_topics"].mean() > 0.75  # the rest is exploration (15%) and topics with no items yet
    # and within a user's topics, the heavier-weighted topic is watched more
    top = joined.assign(top=[t == ts[int(np.argmax(w))] for t, ts, w in
                             zip(joined["topic"], joined["topics"], joined["topic_weights"])])
    multi = top[top["topics"].map(len) > 1]
    share_top = multi.groupby("user_id")["top"].mean()
    assert share_top.median() > 1 / multi["topics"].map(len).median()


def test_positives_are_enriched_for_true_topics_and_style(joined):
    rate = joined.groupby("in_topics")["positive"].mean()
    assert rate[True] > 3 * rate[False]
    rate = joined.groupby("style_match")["positive"].mean()
    assert rate[True] > 1.5 * rate[False]
    like = joined.groupby("in_topics")["liked"].mean()
    assert like[True] > 3 * like[False]
    # style is hidden from the topic: among in-topic events, style still lifts engagement
    in_topic = joined[joined["in_topics"]]
    assert in_topic.loc[in_topic["style_match"], "completion"].mean() > in_topic.loc[~in_topic["style_match"],
                                                                                      "completion"].mean() + 0.1


def test_event_shape(joined):
    assert joined["completion"].between(0, 1.5).all()
    assert (joined.groupby("session_id").size() <= 8).all()
    assert joined.groupby("session_id")["user_id"].nunique().max() == 1
    per_item = joined["item_id"].value_counts()
    assert per_item.iloc[: len(per_item) // 100].sum() > 0.15 * len(joined)  # popularity skew: top 1% of items
    assert 0.02 < joined["liked"].mean() < 0.4 and joined["shared"].mean() < joined["liked"].mean()


def test_same_topic_items_are_closer_in_content_space(small_world_root):
    store = Storage(str(small_world_root))
    items = upto(store, "items", CFG.end).merge(upto(store, "truth_items", CFG.end), on="item_id")
    x = l2_normalize(embedding_matrix(items["embedding"]))
    sims = x @ x.T
    same = items["topic"].to_numpy()[:, None] == items["topic"].to_numpy()[None, :]
    np.fill_diagonal(same, False)
    off_diag = ~np.eye(len(items), dtype=bool)
    assert sims[same].mean() > sims[off_diag & ~same].mean() + 0.3
    # PCA order: the first 16 values carry more variance than the last 16
    var = embedding_matrix(items["embedding"]).var(axis=0)
    assert var[:16].sum() > 2 * var[-16:].sum()


def test_activity_is_heavy_tailed_as_specified():
    """Median ~40 and p99.9 ~2000 interactions per user per 14 days (measured on 20k users)."""
    cfg = GeneratorConfig(users=20_000, items=3_000, days=14, seed=3)
    world = build_world(cfg)
    user_ids = world.users["user_id"].to_numpy()
    totals = np.zeros(cfg.users)
    for d in range(cfg.days):
        for block in events_for_day(cfg, world, d):
            totals += np.bincount(np.searchsorted(user_ids, block["user_id"].to_numpy()), minlength=cfg.users)
    assert 30 <= np.median(totals) <= 55
    assert 1000 <= np.quantile(totals, 0.999) <= 4000
    assert np.quantile(totals, 0.99) > 8 * np.median(totals)
