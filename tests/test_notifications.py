"""Notifications step: one message per eligible user, filters, fallbacks, idempotent outputs, evaluation."""

from __future__ import annotations

import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from notify_fixtures import build_upstream

from recsys_notify.core.buckets import user_slot
from recsys_notify.core.config import get_settings, resolve_path
from recsys_notify.core.contract import ContractError, ingest
from recsys_notify.core.storage import MissingPartitionError, Storage
from recsys_notify.core.templates import load_phrases
from recsys_notify.core.text import clean, repeated_words
from recsys_notify.notifications import arrays
from recsys_notify.notifications import step as nt
from recsys_notify.notifications.candidates import SOURCES
from recsys_notify.notifications.daily import notify
from recsys_notify.notifications.eligibility import holdout
from recsys_notify.notifications.ranking import TRANSPARENT_VERSION
from recsys_notify.notifications.select import in_sorted
from tests.frames import span, upto

DT = date(2026, 11, 12)


@pytest.fixture
def upstream(world):
    build_upstream(world, DT - timedelta(days=1), without_medoids=20)
    return build_upstream(world, DT, without_medoids=20)


def run(storage, dt=DT, **params):
    """The step's summary (counts and evaluation); ranked by the transparent score unless a champion is patched in."""
    return nt.run(storage, get_settings(), dt, params).summary


def pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["item_id"].tolist()))


def test_every_eligible_user_gets_exactly_one_filtered_notification(world, upstream):
    stats = run(world)
    outbox = world.read("outbox", DT)
    users = upto(world, "users", DT)
    assert outbox["user_id"].is_unique
    assert set(outbox["user_id"]) == set(users["user_id"])  # policy "popular" covers users without medoids
    assert stats["no_candidate_users"] == 0 and stats["eligible_users"] == len(users)

    history = span(world, "events", DT - timedelta(days=13), DT)
    assert not pairs(outbox) & pairs(history)
    lang = outbox.merge(upto(world, "items", DT)[["item_id", "language"]], on="item_id", suffixes=("", "_item"))
    assert (lang["language"] == lang["language_item"]).all()

    assert set(outbox["source"]) <= set(SOURCES)
    no_medoids = set(users["user_id"]) - set(upstream["user_medoids"]["user_id"])
    no_medoid_sources = set(outbox.loc[outbox["user_id"].isin(no_medoids), "source"])
    assert "popular" in no_medoid_sources and not no_medoid_sources & {"global_medoid", "cluster_member"}
    assert not outbox["title"].str.contains(r"\{").any() and not outbox["body"].str.contains(r"\{").any()
    en = outbox[outbox["language"] == "en"]
    assert en["template_id"].str.startswith("ops-").all()  # ops template in the user's language wins
    assert outbox.loc[outbox["language"] != "en", "template_id"].str.match(r"auto-|generic-").all()
    assert (outbox["model_version"] == "transparent-v1").all()
    assert outbox["reason"].str.len().gt(10).all() and not outbox["thumbnail"].str.contains("{").any()

    expected_holdout = holdout(outbox["user_id"].to_numpy(), get_settings().notifications.holdout_percent, 0)
    assert (outbox["holdout"].to_numpy() == expected_holdout).all() and 0 < expected_holdout.sum() < 0.15 * len(outbox)
    log = world.read("delivery_log", DT)
    assert len(log) == len(outbox) and set(log.loc[log["holdout"], "status"]) == {"holdout"}


def test_push_content_language_text_and_image(world, upstream):
    """Each row's text is the user's language's (ops or phrase-table wording), else a fallback its reason names;
    the big image is the keyframe closest to the matching interest; creator affinity is off by default."""
    stats = run(world)
    outbox = world.read("outbox", DT)
    user_lang = dict(zip(*upto(world, "users", DT)[["user_id", "language"]].to_numpy().T))
    templates = world.read("templates", DT).set_index("template_id")
    phrases = load_phrases(resolve_path("configs/phrases.yaml"))
    assert len(set(outbox["language"])) >= 5
    for row in outbox.itertuples():
        lang = user_lang[row.user_id]
        assert row.language == lang
        words = phrases[lang]
        if row.template_id.startswith("ops-"):  # the fixture's English ops template
            assert lang == "en" and row.title.startswith("Trending in") and "(language, language en)" in row.reason
        elif row.template_id in templates.index:  # automatic: a phrase of the language with one keyword
            assert templates.loc[row.template_id, "language"] == lang and "(language, language" in row.reason
            patterns = [re.escape(t).replace(re.escape("{keyword}"), r"\S+") for t in words.titles]
            assert row.title == words.generic_title or any(re.fullmatch(p, row.title) for p in patterns), row.title
        else:  # documented fallback: the language's generic text
            assert row.template_id == f"generic-{lang}" and row.title == words.generic_title
            assert "(generic, language" in row.reason
        assert len(row.title) <= 50 and len(row.body) <= 120
        assert clean(row.title) == row.title and clean(row.body) == row.body
        assert not repeated_words(row.title) and not repeated_words(row.body)
    levels = {k: stats[f"text_{k}"] for k in ("language", "any", "generic", "default")}
    assert sum(levels.values()) == len(outbox) and levels["default"] == levels["any"] == 0
    assert sum(v for k, v in stats.items() if k.startswith("language_") and k != "language_from_item") == len(outbox)
    assert "creator" not in stats["sources"] and stats["creator_boosted"] == 0

    # the chosen frame shows the item's topic far more often than the first frame (ground truth)
    frames = upto(world, "frames", DT).merge(upto(world, "truth_frames", DT), on=["item_id", "frame_ts"])
    framed = outbox[outbox["frame_ts"].notna()]
    assert len(framed) > 0.9 * len(outbox) and stats["frame_cover"] == len(outbox) - len(framed)
    chosen = framed.merge(frames, on=["item_id", "frame_ts"], how="left")
    assert chosen["on_topic"].notna().all() and (chosen["image_uri_x"] == chosen["image_uri_y"]).all()
    assert framed["reason"].str.contains(r"image frame [\d.]+s \(closest to the (?:seed|cluster) item").all()
    covers = outbox[outbox["frame_ts"].isna()]
    assert (covers["image_uri"] == covers["thumbnail"]).all() and covers["reason"].str.contains("image cover").all()
    first = framed[["item_id"]].merge(frames.sort_values("frame_ts").drop_duplicates("item_id"), on="item_id")
    assert chosen["on_topic"].mean() > first["on_topic"].mean() + 0.2


def test_creator_affinity_boosts_the_users_dominant_creator(world, upstream):
    stats = run(world, creator_affinity=True)
    outbox = world.read("outbox", DT)
    history = span(world, "events", DT - timedelta(days=6), DT, columns=["user_id", "item_id", "completion", "liked",
                                                                         "shared"])
    positive = history[(history["completion"] > 0.9) | history["liked"] | history["shared"]]
    creator_of = upto(world, "items", DT, columns=["item_id", "creator_id"]).set_index("item_id")["creator_id"]
    counts = positive.assign(creator=positive["item_id"].map(creator_of)).groupby(["user_id", "creator"]).size()
    share = counts / counts.groupby("user_id").transform("sum")
    dominant = {u: c for (u, c), n in counts.items() if n >= 3 and share[(u, c)] >= 0.3}
    boosted = outbox[outbox["reason"].str.contains("dominant creator x1.5")]
    assert stats["creator_boosted"] == len(boosted) > 0
    assert all(dominant.get(u) == creator_of[i] for u, i in zip(boosted["user_id"], boosted["item_id"]))


def test_user_without_a_language_gets_the_items_language(world, upstream):
    medoids = upstream["user_medoids"]
    stranger = medoids[medoids["user_id"] == medoids["user_id"].iloc[0]].assign(user_id=999_999)  # not in users
    world.write("user_medoids", DT, pd.concat([medoids, stranger], ignore_index=True))
    stats = run(world)
    row = world.read("outbox", DT).set_index("user_id").loc[999_999]
    item_language = upto(world, "items", DT).set_index("item_id").loc[row["item_id"], "language"]
    assert row["language"] == item_language and f"language {item_language} from the item" in row["reason"]
    assert stats["language_from_item"] == 1


def test_rerun_gives_identical_outbox_and_no_duplicate_log(world, upstream):
    run(world)
    first = world.read("outbox", DT)
    run(world)
    assert world.read("outbox", DT).equals(first)
    logs = pd.concat([world.read("delivery_log", d) for d in world.dates("delivery_log")])
    assert not logs.duplicated(["user_id", "date"]).any() and len(logs) == len(first)


def test_sent_items_are_not_repeated_and_frequency_cap(world, upstream):
    run(world, DT - timedelta(days=1))
    before = world.read("outbox", DT - timedelta(days=1))
    run(world)
    today = world.read("outbox", DT)
    assert not pairs(before[~before["holdout"]]) & pairs(today)

    run(world, frequency_cap=1, max_per_user_days=2)
    capped = world.read("outbox", DT)
    assert set(capped["user_id"]) == set(before.loc[before["holdout"], "user_id"])  # only held-out users were not sent

    feedback = world.read("delivery_feedback", DT)
    assert len(feedback) == (~before["holdout"]).sum()
    events = world.read("events", DT)
    watched = pairs(events)
    played = pairs(events[events["completion"] >= get_settings().notifications.played_completion])
    sent_pairs = list(zip(feedback["user_id"], feedback["item_id"]))
    assert feedback["opened"].tolist() == [p in watched for p in sent_pairs] and feedback["delivered"].all()
    assert feedback["engaged"].tolist() == feedback["played"].tolist() == [p in played for p in sent_pairs]


def test_click_without_play_is_no_engagement(world, upstream):
    """An item opened the day after it was sent but not played stays out of later sends, like an ignored one."""
    day0 = DT - timedelta(days=1)
    run(world, day0)
    sent = world.read("outbox", day0)
    sent = sent[~sent["holdout"]].iloc[:2]
    events = world.read("events", DT)
    extra = events.iloc[:2].copy()
    extra["user_id"], extra["item_id"] = sent["user_id"].to_numpy(), sent["item_id"].to_numpy()
    extra["completion"] = [0.02, 0.8]  # a tap that bounced, and a real play
    extra["watch_time_s"] = extra["completion"] * extra["duration_s"]
    extra["session_id"] = extra["session_id"] + 10**9
    world.write("events", DT, pd.concat([events, extra], ignore_index=True))
    stats = run(world)
    fb = world.read("delivery_feedback", DT).set_index(["user_id", "item_id"])
    (bounced, played) = list(zip(sent["user_id"], sent["item_id"]))
    assert fb.loc[bounced, ["delivered", "opened", "played", "engaged"]].tolist() == [True, True, False, False]
    assert fb.loc[played, ["delivered", "opened", "played", "engaged"]].tolist() == [True, True, True, True]
    assert stats["feedback_opened_not_played"] >= 1 and stats["feedback_played"] >= 1

    # the next day, with the history and sent windows too short to see them, only the feedback decides
    nxt = DT + timedelta(days=1)
    build_upstream(world, nxt)
    base = get_settings()
    settings = base.model_copy(update={"notifications": base.notifications.model_copy(
        update={"history_days": 1, "sent_lookback_days": 1})})
    dense = arrays.build(nt.read_tables(nt.resolve_inputs(world, settings, nxt), settings, nxt), settings, nxt)
    users, items = np.searchsorted(dense.user_ids, [bounced[0], played[0]]), np.searchsorted(
        dense.catalogue.item_ids, [bounced[1], played[1]])
    assert in_sorted(dense.keys(users, items), dense.excluded).tolist() == [True, False]


def test_unengaged_sends_blocked_items_and_no_medoid_policy(world, upstream):
    day0 = DT - timedelta(days=1)
    run(world)
    first = world.read("outbox", DT)
    blocked = first["item_id"].value_counts().index[:3].to_numpy()
    world.write("overrides", DT, pd.DataFrame({"override_id": ["a", "b", "c"], "action": "block", "item_id": blocked,
                                                "revoked_dt": [None, None, None], "expires": [None, None, None]}))
    user, item = int(first["user_id"].iloc[0]), int(first["item_id"].iloc[0])
    world.write("delivery_feedback", day0, pd.DataFrame({"user_id": [user], "item_id": [item], "sent_date": [day0],
                                                         "engaged": [False]}))
    run(world, no_medoid_policy="none")
    second = world.read("outbox", DT)
    assert not second["item_id"].isin(blocked).any()
    assert item not in set(second.loc[second["user_id"] == user, "item_id"])
    no_medoids = set(first["user_id"]) - set(world.read("user_medoids", DT)["user_id"])
    assert no_medoids and not second["user_id"].isin(no_medoids).any()


def test_fallback_sources_fill_short_candidate_lists(world, upstream):
    stats = run(world, min_candidates=500, k_neighbours=2)
    outbox = world.read("outbox", DT)
    assert stats["no_candidate_users"] == 0
    assert {"more_global_medoids", "popular"} <= set(outbox["source"])
    assert "short_term" in run(world)["sources"]  # yesterday's positives seed some winners...
    assert "short_term" not in run(world, short_term_enabled=False)["sources"]  # ...unless switched off


def test_champion_ranker_decides_and_is_recorded(world, upstream, monkeypatch):
    class FakeRanker:
        version = "7"
        seen: list[tuple[np.ndarray, np.ndarray]] = []

        def requests(self, dt):
            return {}

        def bind(self, inputs):
            return self

        def score(self, user_ids, item_ids):
            self.seen.append((user_ids, item_ids))
            return ((user_ids * 31 + item_ids * 17) % 1000).astype(float)  # unrelated to the transparent score

    ranker = FakeRanker()
    monkeypatch.setattr(nt, "load_champion", lambda settings: ranker)
    run(world)
    outbox = world.read("outbox", DT)
    assert (outbox["model_version"] == "two_tower:7").all()
    scored = pd.DataFrame({"user_id": np.concatenate([u for u, _ in ranker.seen]),
                           "item_id": np.concatenate([i for _, i in ranker.seen])})
    scored["score"] = (scored["user_id"] * 31 + scored["item_id"] * 17) % 1000
    assert not scored.duplicated(["user_id", "item_id"]).any()
    best = scored.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True]).drop_duplicates("user_id")
    merged = outbox.merge(best, on="user_id", suffixes=("", "_best"))
    assert len(merged) == len(outbox)
    assert (merged["item_id"] == merged["item_id_best"]).all() and np.allclose(merged["score"], merged["score_best"])


def test_bad_upstream_fails_before_writing(world, upstream):
    world.write("user_medoids", DT, upstream["user_medoids"].drop(columns=["importance"]))
    with pytest.raises(ContractError, match="user_medoids dt=2026-11-12: missing column.*importance"):
        run(world)
    build_upstream(world, DT, dim=8)
    with pytest.raises(ContractError, match="vector length 8 != item vector length 16"):
        run(world)
    assert not world.exists("outbox", DT) and not world.exists("delivery_log", DT)
    with pytest.raises(ValueError, match="holdout_percent"):
        run(world, holdout_percent=120)


def test_hit_rate_beats_popular_baseline(world):
    """Pooled over three days, the chosen item is hit at least twice as often as the popular item."""
    hits: dict[str, float] = {}
    for day in (DT - timedelta(days=2), DT - timedelta(days=1), DT):
        build_upstream(world, day)
        m = run(world, day)
        assert m["evaluated_users"] > 300 and 0 < m["coverage"] <= 1 and 0 < m["diversity"] <= 1
        for name in ("", "popular_", "random_"):
            for level in ("item", "cluster"):
                key = f"{name}{level}"
                hits[key] = hits.get(key, 0.0) + m[f"{name}hit_rate_{level}"] * m["evaluated_users"]
    assert hits["item"] >= 2 * max(hits["popular_item"], 1)
    assert hits["cluster"] >= 2 * hits["popular_cluster"] > 0
    assert hits["cluster"] > 2 * hits["random_cluster"]


def test_shards_give_the_same_outputs_as_one_process(world, upstream):
    """Sharding splits the work only: outbox, delivery log, feedback and evaluation do not depend on it."""
    run(world, DT - timedelta(days=1))  # yesterday's sends, so today's feedback has rows
    keys = {"outbox": ["user_id"], "delivery_log": ["user_id"], "delivery_feedback": ["user_id", "item_id"]}

    def outputs() -> dict[str, pd.DataFrame]:
        return {name: world.read(name, DT).sort_values(key).reset_index(drop=True) for name, key in keys.items()}

    one = run(world, shards=1)
    single = outputs()
    three = run(world, shards=3)
    for name, frame in outputs().items():
        assert len(frame) > 0, name
        pd.testing.assert_frame_equal(frame, single[name], check_like=True)
    assert {k: v for k, v in three.items() if k != "shards"} == {k: v for k, v in one.items() if k != "shards"}
    assert three["shards"] == 3 and three["evaluated_users"] > 0
    for s in range(3):  # each shard committed only its own users
        part = world.read(f"outbox_shard_{s:03d}_of_003", DT)
        assert len(part) and (user_slot(part["user_id"].to_numpy(), 3) == s).all()


def test_a_shard_reads_only_the_chosen_items_keyframes_and_picks_the_frames_a_whole_read_does(world, upstream,
                                                                                               monkeypatch):
    read = []
    where = Storage._read_where
    monkeypatch.setattr(Storage, "_read_where", lambda self, *a: read.append(where(self, *a)) or read[-1])
    run(world, shards=2)
    outbox = world.read("outbox", DT)
    frames = upto(world, "frames", DT)
    assert read and 0 < sum(t.num_rows for t in read) < len(frames)  # only the chosen items' frames
    assert set(pa.concat_tables(read).column("item_id").to_pylist()) <= set(outbox["item_id"])

    settings = get_settings()  # the pure path over every item's frames, as one process reading everything
    inputs = nt.resolve_inputs(world, settings, DT)
    phrases = load_phrases(resolve_path(settings.global_medoids.phrases_path))
    whole = notify(arrays.build(nt.read_tables(inputs, settings, DT), settings, DT), settings, None,
                   TRANSPARENT_VERSION, phrases).outbox
    columns = ["user_id", "item_id", "frame_ts", "image_uri", "reason"]
    assert outbox["frame_ts"].notna().sum() > 0.9 * len(outbox)
    pd.testing.assert_frame_equal(outbox[columns].sort_values("user_id").reset_index(drop=True),
                                  whole[columns].sort_values("user_id").reset_index(drop=True))


def test_item_popularity_counts_every_users_recent_positives(world, upstream):
    """The popularity every shard reads equals counting the whole window in one process."""
    settings = get_settings()
    nt.prepare(world, settings, DT)
    inputs = nt.resolve_inputs(world, settings, DT, popularity=True)
    whole = arrays.build(nt.read_tables(inputs, settings, DT), settings, DT).catalogue
    counted = arrays.build(nt.read_tables(inputs, settings, DT, (0, 2)), settings, DT).catalogue
    assert whole.pop.sum() > 0
    np.testing.assert_array_equal(counted.pop, whole.pop)


def test_formatted_equals_formatting_every_row():
    """Rows formatted once per distinct value give the per-row strings, -0.0, NaN and None included."""
    sims = np.array([0.5, -0.0, 0.0, np.nan, 0.5, np.nan], dtype=np.float32)
    ids = np.array([1, 1, 1, 2, 1, 2])
    names = np.array(["a", None, "a", "b", "a", None], dtype=object)
    def fmt(s, i, n):
        return f"{s:.2f}/{i}/{n}"
    got = arrays.formatted(fmt, sims, ids, names)
    assert got.dtype == object and got.tolist() == [fmt(*row) for row in zip(sims.tolist(), ids.tolist(), names)]
    assert got[1] == "-0.00/1/None" and arrays.formatted(fmt, sims[:0], ids[:0], names[:0]).tolist() == []


def test_popularity_reuses_each_days_counts_unless_its_events_or_rule_changed(world, upstream):
    """Each prepare commits its day's positives and a later day sums the saved ones instead of scanning
    their events; a day re-ingested since (a new events version) or another positive rule is scanned
    again. The sum always equals counting the window's events directly."""
    settings = get_settings()
    days, prev = settings.notifications.popularity_days, DT - timedelta(days=1)

    def expected(rule: float) -> pd.Series:
        events = span(world, "events", DT - timedelta(days=days - 1), DT,
                      columns=["item_id", "completion", "liked", "shared"])
        positive = events[(events["completion"] > rule) | events["liked"] | events["shared"]]
        return positive.groupby("item_id").size().astype("int64")

    def popularity() -> pd.Series:
        return world.read("item_popularity", DT).set_index("item_id")["positives"]

    rule = settings.notifications.positive_completion
    assert nt.prepare(world, settings, DT)["event_days_scanned"] == days  # no earlier day counted yet
    assert nt.prepare(world, settings, prev)["event_days_scanned"] == days
    assert nt.prepare(world, settings, DT)["event_days_scanned"] == days - 1  # prev's counts reused
    pd.testing.assert_series_equal(popularity(), expected(rule), check_names=False)
    for back in range(2, days):
        nt.commit_day(world, settings, DT - timedelta(days=back))
    assert nt.prepare(world, settings, DT)["event_days_scanned"] == 1
    pd.testing.assert_series_equal(popularity(), expected(rule), check_names=False)

    raw = world.read("events", prev).drop(columns="bucket")
    ingest(world, "events", prev, raw[~raw["liked"]])  # the day replaced: its saved counts are stale
    assert nt.prepare(world, settings, DT)["event_days_scanned"] == 2  # that day and DT itself
    pd.testing.assert_series_equal(popularity(), expected(rule), check_names=False)

    nt.prepare(world, settings, prev)
    assert nt.prepare(world, settings, DT, {"positive_completion": 0.5})["event_days_scanned"] == days
    pd.testing.assert_series_equal(popularity(), expected(0.5), check_names=False)


def test_shards_read_trimmed_keyframes_only_when_every_frames_partition_has_a_current_twin(world, upstream,
                                                                                          monkeypatch):
    """``frames_trimmed`` (committed by each day's popularity task or ``commit_day``) gives the outbox the
    full frames give; a frames partition without a twin, or replaced since its twin was cut, means the
    frames are read instead."""
    settings = get_settings()
    read = []
    where = Storage._read_where
    monkeypatch.setattr(Storage, "_read_where", lambda self, path, *a: read.append(path) or where(self, path, *a))
    frame_dates = [p.dt for p in nt.resolve_inputs(world, settings, DT)["frames"].partitions]
    assert len(frame_dates) > 1

    def outbox_reading() -> tuple[pd.DataFrame, set[str]]:
        read.clear()
        run(world, shards=2)
        return world.read("outbox", DT), {"trimmed" if "/frames_trimmed/" in path else "frames" for path in read}

    columns = ["user_id", "item_id", "frame_ts", "image_uri", "reason"]
    full, kinds = outbox_reading()  # only DT's frames are trimmed yet (by this run's popularity task)
    assert kinds == {"frames"} and full["frame_ts"].notna().any()
    for d in frame_dates[:-1]:
        nt.commit_day(world, settings, d)
    with pytest.raises(MissingPartitionError, match="nothing to derive"):
        nt.commit_day(world, settings, date(2020, 1, 1))
    trimmed, kinds = outbox_reading()
    assert kinds == {"trimmed"}
    pd.testing.assert_frame_equal(trimmed[columns], full[columns])
    twin = world.read_table("frames_trimmed", frame_dates[0])
    assert pa.types.is_list(twin.schema.field("embedding").type)
    assert set(pc.list_value_length(twin.column("embedding")).to_pylist()) == {settings.embedding.trimmed_dim}

    raw = world.read("frames", frame_dates[0])
    ingest(world, "frames", frame_dates[0], raw)  # a new version: that day's twin is stale
    again, kinds = outbox_reading()
    assert kinds == {"frames"}
    pd.testing.assert_frame_equal(again[columns], full[columns])
