"""Deterministic synthetic short-video logs with the ground truth that produced them.

The world: ``topics`` latent topics and ``styles`` hidden styles. Creators have a topic, a
style and a language; items inherit them (topic mostly). An item's 128-dim content embedding is
its topic centre plus a *weak* style direction plus noise, rotated into PCA order so the first 16
values carry the most variance. Each user has 1-6 interest topics with weights and one or two
preferred styles; engagement (completion, like, share) rises with topic weight *and* style match,
so engagement depends on more than content, which is what the generic embedding model must learn.

Each item has 3-8 keyframes (``frames``) embedded in the same space: a frame shows the item's topic
(ground truth ``truth_frames.on_topic``, about half of them) or another topic, with the same noise.

Activity is heavy-tailed (lognormal, median ~40 and p99.9 ~2000 interactions per 14 days),
item popularity is Pareto-skewed, new items appear every day, events come in sessions. With
``interest_drift`` > 0 interests move over time: trending topics (new videos) that users take up.
All sampling is vectorised numpy; events are generated, validated and written one day at a time in
blocks of users, so memory stays bounded for a million users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.decomposition import PCA

from recsys_notify.core.buckets import DEFAULT_BUCKETS
from recsys_notify.core.contract import EMBEDDING_DIM, ingest
from recsys_notify.core.datasets import EVENTS, FRAMES, ITEMS, TRUTH_FRAMES, TRUTH_ITEMS, TRUTH_USERS, USERS
from recsys_notify.core.storage import Storage, as_date

LANG_CODES = np.array(["en", "es", "pt", "hi", "id", "ru", "de"])
LANG_SHARE = np.array([0.5, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05])
WORDS = (
    "football basketball tennis cooking baking pasta sushi guitar piano drums dance ballet hiphop makeup "
    "skincare fashion sneakers cats dogs puppies parrots fishing hiking camping travel beach mountains "
    "cars motorbikes racing gaming minecraft chess comedy pranks magic science physics chemistry space "
    "rockets history painting drawing pottery gardening plants fitness yoga running boxing surfing "
    "skateboarding diy woodwork crafts origami anime movies trailers music karaoke singing rap jazz "
    "coffee cocktails wine vegan bbq street food tech phones coding robots finance crypto investing "
    "parenting babies wedding home decor cleaning lifehacks books poetry language learning math "
    "news weather nature birds ocean snow farming horses"
).split()
FILLER = "wow amazing best new daily tips watch try today epic quick easy top love".split()
FRAME_URI = "s3://recsys-media/frames/{item_id}/{ms}.jpg"
ON_TOPIC_FRAME_SHARE = 0.5


@dataclass(frozen=True)
class GeneratorConfig:
    users: int = 2000
    items: int = 5000
    days: int = 14
    end: date = date(2026, 11, 14)
    topics: int = 40
    styles: int = 8
    seed: int = 0
    median_interactions: float = 40.0
    p999_interactions: float = 2000.0
    back_catalogue_share: float = 0.7
    explore_share: float = 0.15
    # amplitude of the style direction in content space (topic centres: ~1); at 0.35 content alone
    # found same-style neighbours 97% of the time, so style was not "hidden"; 0.15 leaves ~58%
    style_signal: float = 0.15
    noise: float = 0.55
    # daily probability that a user takes up the trending topic (one of the least popular topics, a new
    # one every TREND_DAYS days) as their strongest interest, dropping their weakest; 0 = fixed interests
    interest_drift: float = 0.0
    buckets: int = DEFAULT_BUCKETS  # user buckets per events partition (settings.event_buckets)

    def __post_init__(self) -> None:
        if self.items < EMBEDDING_DIM:
            raise ValueError(f"items must be at least {EMBEDDING_DIM} (the embedding PCA needs that many), "
                             f"got {self.items}")
        if not 0.0 <= self.interest_drift <= 1.0:
            raise ValueError(f"interest_drift must be a probability in [0, 1], got {self.interest_drift}")
        for name in ("users", "days", "topics", "styles"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def start(self) -> date:
        return self.end - timedelta(days=self.days - 1)


@dataclass
class World:
    """Everything fixed before the first event: items, users and their hidden truth."""

    items: pd.DataFrame
    item_topic: np.ndarray
    item_style: np.ndarray
    item_pop: np.ndarray
    item_created_day: np.ndarray  # day index (negative = back catalogue)
    users: pd.DataFrame
    user_topics: np.ndarray  # (n_users, 6) topic ids, -1 padded
    user_weights: np.ndarray  # (n_users, 6) weights summing to 1
    user_styles: np.ndarray  # (n_users, 2) style ids (may repeat)
    user_rate: np.ndarray  # expected interactions per day
    trend_topics: np.ndarray  # the least popular topics, in the order they trend under interest drift
    embed: Callable[[np.ndarray], np.ndarray]  # raw (n, 256) -> PCA-128 content space, as the items were
    centres: np.ndarray  # (topics, 256) raw topic centres
    style_dirs: np.ndarray  # (styles, 256) raw style directions


def _day_start(day: date) -> pd.Timestamp:
    return pd.Timestamp(datetime(day.year, day.month, day.day, tzinfo=timezone.utc))


def _captions(rng: np.random.Generator, topic: np.ndarray, n_topics: int) -> np.ndarray:
    """Captions of 2-4 topic words, a filler word and a topic hashtag (vectorised string ops)."""
    topic_words = np.array([rng.choice(WORDS, 5, replace=False) for _ in range(n_topics)])
    n_words = rng.integers(2, 5, len(topic))
    order = np.argsort(rng.random((len(topic), 5)), axis=1)[:, :4]  # 4 distinct words per item
    words = topic_words[topic[:, None], order]
    text = np.strings.add(np.strings.add(words[:, 0], " "), words[:, 1])
    for j in (2, 3):
        text = np.strings.add(text, np.where(n_words > j, np.strings.add(" ", words[:, j]), ""))
    filler = np.array(FILLER)[rng.integers(0, len(FILLER), len(topic))]
    text = np.strings.add(text, np.strings.add(" ", filler))
    text = np.strings.add(text, np.strings.add(" #", topic_words[topic, 0]))
    return text.astype(object)


def build_world(cfg: GeneratorConfig) -> World:
    """Draw creators, items, embeddings, users and interests (deterministic by seed)."""
    rng = np.random.default_rng(cfg.seed)
    n_items, n_users, T, S = cfg.items, cfg.users, cfg.topics, cfg.styles
    topic_share = rng.dirichlet(np.full(T, 2.0))

    n_creators = max(10, n_items // 25)
    creator_topic = rng.choice(T, n_creators, p=topic_share)
    creator_style = rng.integers(0, S, n_creators)
    creator_lang = rng.choice(len(LANG_CODES), n_creators, p=LANG_SHARE)
    creator_weight = rng.pareto(1.5, n_creators) + 1.0
    creator = rng.choice(n_creators, n_items, p=creator_weight / creator_weight.sum())
    topic = np.where(rng.random(n_items) < 0.85, creator_topic[creator], rng.choice(T, n_items, p=topic_share))
    style = creator_style[creator]

    raw_dim = 2 * EMBEDDING_DIM
    centres = rng.normal(size=(T, raw_dim)) / np.sqrt(raw_dim) * 4.0
    style_dirs = rng.normal(size=(S, raw_dim)) / np.sqrt(raw_dim) * 4.0 * cfg.style_signal
    raw = centres[topic] + style_dirs[style] + rng.normal(size=(n_items, raw_dim)) / np.sqrt(raw_dim) * 4.0 * cfg.noise
    pca = PCA(n_components=EMBEDDING_DIM, svd_solver="covariance_eigh")  # n >> 256: eigh of the covariance is fast
    emb = pca.fit_transform(raw.astype(np.float32)).astype(np.float32)

    n_new = int(round(n_items * (1 - cfg.back_catalogue_share)))
    created_day = np.concatenate([
        -rng.integers(1, 90, n_items - n_new),
        rng.integers(0, cfg.days, n_new),
    ])
    rng.shuffle(created_day)
    offsets = pd.to_timedelta(created_day * 86_400 + rng.integers(0, 86_400, n_items), unit="s")
    item_ids = np.arange(1, n_items + 1, dtype=np.int64) * 7 + 1000  # sparse ids catch index/id mix-ups

    items = pd.DataFrame({
        "item_id": item_ids,
        "creator_id": creator.astype(np.int64) + 1,
        "language": LANG_CODES[creator_lang[creator]],
        "duration_s": np.clip(rng.lognormal(np.log(25), 0.6, n_items), 5, 180).round(1),
        "created_ts": _day_start(cfg.start) + offsets,
        "caption": _captions(rng, topic, T),
        "embedding": list(emb),
    })
    pop = rng.pareto(1.2, n_items) + 1.0

    k = rng.choice(np.arange(1, 7), n_users, p=[0.2, 0.3, 0.2, 0.15, 0.1, 0.05])
    user_topics = np.full((n_users, 6), -1, dtype=np.int64)
    user_weights = np.zeros((n_users, 6))
    prefs = rng.random((n_users, T)) * topic_share  # popular topics are more common interests
    order = np.argsort(-(prefs + rng.gumbel(size=(n_users, T)) * 1e-3), axis=1)[:, :6]
    w = rng.dirichlet(np.full(6, 1.5), n_users)
    mask = np.arange(6)[None, :] < k[:, None]
    user_topics[mask] = order[mask]
    w = np.where(mask, w, 0.0)
    user_weights = w / w.sum(axis=1, keepdims=True)
    user_styles = rng.integers(0, S, (n_users, 2))
    user_styles[:, 1] = np.where(rng.random(n_users) < 0.5, user_styles[:, 0], user_styles[:, 1])

    sigma = np.log(cfg.p999_interactions / cfg.median_interactions) / 3.09
    total = np.clip(rng.lognormal(np.log(cfg.median_interactions), sigma, n_users), 1, 20_000)
    lang = np.where(rng.random(n_users) < 0.9, rng.choice(len(LANG_CODES), n_users, p=LANG_SHARE), 0)
    users = pd.DataFrame({
        "user_id": np.arange(1, n_users + 1, dtype=np.int64) * 3 + 500,
        "language": LANG_CODES[lang],
        "signup_ts": _day_start(cfg.start) - pd.to_timedelta(rng.integers(1, 700 * 86_400, n_users), unit="s"),
    })
    trend = rng.permutation(np.argsort(topic_share, kind="stable")[:max(1, T // 2)])
    if cfg.interest_drift > 0:
        _launch_trends(cfg, trend, topic, created_day, items)
    embed = lambda raw: pca.transform(raw.astype(np.float32)).astype(np.float32)  # noqa: E731
    return World(items, topic, style, pop, created_day, users, user_topics, user_weights, user_styles, total / 14.0,
                 trend, embed, centres, style_dirs)


def frames_for(cfg: GeneratorConfig, world: World, rows: np.ndarray, day_idx: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keyframes (the ``frames`` contract) and their ground truth for the items at positions ``rows``."""
    rng = np.random.default_rng([cfg.seed, day_idx, 7])
    n = rng.integers(3, 9, len(rows))
    item = np.repeat(rows, n)
    j = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    on_topic = rng.random(len(item)) < ON_TOPIC_FRAME_SHARE
    other = rng.integers(0, cfg.topics, len(item))
    topic = np.where(on_topic | (cfg.topics < 2), world.item_topic[item], other)
    on_topic |= topic == world.item_topic[item]
    raw_dim = world.centres.shape[1]
    raw = (world.centres[topic] + world.style_dirs[world.item_style[item]]
           + rng.normal(size=(len(item), raw_dim)) / np.sqrt(raw_dim) * 4.0 * cfg.noise)
    duration = world.items["duration_s"].to_numpy()[item]
    ts = np.round(duration * (j + rng.uniform(0.2, 0.8, len(item))) / np.repeat(n, n), 2)
    ids = world.items["item_id"].to_numpy()[item]
    frames = pd.DataFrame({"item_id": ids, "frame_ts": ts, "embedding": list(world.embed(raw)),
                           "image_uri": [FRAME_URI.format(item_id=i, ms=int(t * 1000)) for i, t in zip(ids, ts)]})
    return frames, pd.DataFrame({"item_id": ids, "frame_ts": ts, "on_topic": on_topic})


def _launch_trends(cfg: GeneratorConfig, trend: np.ndarray, topic: np.ndarray, created_day: np.ndarray,
                   items: pd.DataFrame) -> None:
    """A topic's videos appear when it starts trending (in place): a trend is new content, not old items.

    Its own seeded stream, so worlds without drift are unchanged.
    """
    rng = np.random.default_rng([cfg.seed, 3])
    for t, first in enumerate(range(0, cfg.days, TREND_DAYS)):
        rows = np.flatnonzero(topic == trend[t % len(trend)])
        created_day[rows] = np.minimum(first + rng.integers(0, TREND_DAYS, len(rows)), cfg.days - 1)
    offsets = pd.to_timedelta(created_day * 86_400 + rng.integers(0, 86_400, len(topic)), unit="s")
    items["created_ts"] = _day_start(cfg.start) + offsets


def drift_interests(cfg: GeneratorConfig, world: World, day_idx: int) -> np.ndarray:
    """Move some users' interests to the trending topic (in place); returns the users changed.

    Each user independently, with probability ``interest_drift``, replaces their weakest interest
    by the trending topic with their strongest weight (weights renormalised), so interest in the
    topic appears across the population at once: the population-level drift a stale global
    clustering misses. A user already following the topic is left alone.
    """
    if cfg.interest_drift <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([cfg.seed, day_idx, 2])
    topic = world.trend_topics[day_idx // TREND_DAYS % len(world.trend_topics)]
    moving = rng.random(len(world.users)) < cfg.interest_drift
    moving &= ~(world.user_topics == topic).any(axis=1)
    rows = np.flatnonzero(moving)
    weights = world.user_weights[rows]
    weakest = np.argmin(np.where(weights > 0, weights, np.inf), axis=1)
    free = (weights == 0).any(axis=1)  # fewer than 6 interests: add the topic instead of dropping one
    slot = np.where(free, np.argmax(weights == 0, axis=1), weakest)
    world.user_topics[rows, slot] = topic
    weights[np.arange(len(rows)), slot] = weights.max(axis=1)
    world.user_weights[rows] = weights / weights.sum(axis=1, keepdims=True)
    return rows


TREND_DAYS = 3  # days a topic trends under interest drift before the next one starts
USER_CHUNK = 100_000  # users per generated block: bounds memory; part of the seed stream, so fixed


@dataclass
class _ItemSampler:
    """Per-day item choice within a topic, proportional to popularity x freshness (created items only)."""

    by_topic: np.ndarray
    t_sorted: np.ndarray
    norm_cum: np.ndarray
    seg_total: np.ndarray
    all_cum: np.ndarray

    @classmethod
    def for_day(cls, cfg: GeneratorConfig, world: World, day_idx: int) -> _ItemSampler:
        age = day_idx - world.item_created_day
        weight = np.where(age >= 0, world.item_pop * (1.0 + 2.0 * np.exp(-np.maximum(age, 0) / 3.0)), 0.0)
        by_topic = np.argsort(world.item_topic, kind="stable")
        t_sorted = world.item_topic[by_topic]
        w_sorted = weight[by_topic]
        seg_total = np.bincount(t_sorted, weights=w_sorted, minlength=cfg.topics)
        within = np.cumsum(w_sorted) - np.concatenate([[0], np.cumsum(seg_total)[:-1]])[t_sorted]
        norm_cum = t_sorted + within / np.maximum(seg_total[t_sorted], 1e-12)
        return cls(by_topic, t_sorted, norm_cum, seg_total, np.cumsum(w_sorted) / w_sorted.sum())

    def sample(self, rng: np.random.Generator, topic: np.ndarray) -> np.ndarray:
        n = topic.size
        # a topic with no item yet falls back to a popularity-weighted draw over all items
        empty = self.seg_total[topic] <= 0
        topic = np.where(empty, self.t_sorted[np.searchsorted(self.all_cum, rng.random(n))], topic)
        pos = np.searchsorted(self.norm_cum, topic + rng.random(n) * (1 - 1e-9), side="right")
        return self.by_topic[np.clip(pos, 0, len(self.by_topic) - 1)]


def _events_for_users(cfg: GeneratorConfig, world: World, day_idx: int, users: slice, day_factor: float,
                      sampler: _ItemSampler, rng: np.random.Generator) -> pd.DataFrame:
    """Events of one day for a contiguous block of users."""
    rate = world.user_rate[users]
    counts = rng.poisson(rate * day_factor)
    local = np.repeat(np.arange(rate.size), counts)
    uidx = local + (users.start or 0)
    n = uidx.size
    if n == 0:
        return pd.DataFrame()

    # topic: one of the user's interests by weight, else exploration over all topics
    weights = world.user_weights[uidx]
    cum = np.cumsum(weights, axis=1)
    pick = (cum < rng.random(n)[:, None]).sum(axis=1).clip(max=5)
    topics = world.user_topics[uidx]
    topic = topics[np.arange(n), pick]
    explore = rng.random(n) < cfg.explore_share
    topic = np.where(explore, rng.integers(0, cfg.topics, n), topic)
    item = sampler.sample(rng, topic)

    # engagement propensity: topic interest weight and hidden style match
    item_topic = world.item_topic[item]
    topic_aff = np.sqrt(((topics == item_topic[:, None]) * weights).sum(axis=1))
    style_match = (world.user_styles[uidx] == world.item_style[item][:, None]).any(axis=1)
    logit = -2.0 + 3.0 * topic_aff + 1.8 * style_match + rng.normal(0, 0.6, n)
    p = 1.0 / (1.0 + np.exp(-logit))
    completion = rng.beta(0.4 + 5 * p, 0.4 + 5 * (1 - p))
    rewatch = rng.random(n) < 0.15 * p
    completion = np.where(rewatch, completion + rng.uniform(0, 0.4, n), completion)
    duration = world.items["duration_s"].to_numpy()[item]
    liked = rng.random(n) < 0.55 * p**2
    shared = rng.random(n) < 0.15 * p**3

    # sessions of ~8 events with a random start each; timestamps inside the day in session order
    sess_len = 8
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - first[local]
    sess_k = rank // sess_len
    n_sess = -(-counts // sess_len)
    sess_first = np.concatenate([[0], np.cumsum(n_sess)[:-1]])
    sess_start = rng.integers(0, 80_000, int(n_sess.sum()))
    offset = sess_start[sess_first[local] + sess_k] + rank % sess_len * 40
    day_ord = (cfg.start + timedelta(days=day_idx)).toordinal()
    session_id = (day_ord * (len(world.users) + 1) + uidx) * 1024 + sess_k
    ts = _day_start(cfg.start + timedelta(days=day_idx)) + pd.to_timedelta(np.minimum(offset, 86_399), unit="s")

    return pd.DataFrame({
        "user_id": world.users["user_id"].to_numpy()[uidx],
        "item_id": world.items["item_id"].to_numpy()[item],
        "session_id": session_id.astype(np.int64),
        "ts": ts,
        "watch_time_s": np.round(completion * duration, 2),
        "duration_s": duration,
        "liked": liked,
        "shared": shared,
    })


def events_for_day(cfg: GeneratorConfig, world: World, day_idx: int) -> Iterator[pd.DataFrame]:
    """One day of events in blocks of ``USER_CHUNK`` users (each block has its own seeded RNG)."""
    day_factor = np.random.default_rng([cfg.seed, day_idx, 0]).uniform(0.7, 1.3)
    sampler = _ItemSampler.for_day(cfg, world, day_idx)
    for c, lo in enumerate(range(0, len(world.users), USER_CHUNK)):
        rng = np.random.default_rng([cfg.seed, day_idx, 1, c])
        block = _events_for_users(cfg, world, day_idx, slice(lo, min(lo + USER_CHUNK, len(world.users))),
                                  day_factor, sampler, rng)
        if len(block):
            yield block


def truth_frames(world: World) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ground truth: item topic/style and user interest topics/weights/styles."""
    items = pd.DataFrame({
        "item_id": world.items["item_id"].to_numpy(),
        "topic": world.item_topic.astype(np.int64),
        "style": world.item_style.astype(np.int64),
        "creator_id": world.items["creator_id"].to_numpy(),
    })
    has_topic = world.user_topics >= 0
    offsets = np.concatenate([[0], np.cumsum(has_topic.sum(axis=1))]).astype(np.int32)
    two_styles = world.user_styles[:, 0] != world.user_styles[:, 1]
    style_offsets = np.concatenate([[0], np.cumsum(1 + two_styles)]).astype(np.int32)
    styles = np.sort(world.user_styles, axis=1)
    users = pa.table({
        "user_id": world.users["user_id"].to_numpy(),
        "topics": pa.ListArray.from_arrays(offsets, world.user_topics[has_topic]),
        "topic_weights": pa.ListArray.from_arrays(offsets, world.user_weights[has_topic]),
        "styles": pa.ListArray.from_arrays(style_offsets, styles[np.stack([np.ones_like(two_styles), two_styles], 1)]),
        "daily_rate": world.user_rate,
    }).to_pandas()
    return items, users


def generate(storage: Storage, cfg: GeneratorConfig,
             progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Write items/users (by creation day), D days of events and the ground truth; return counts."""
    world = build_world(cfg)
    truth_items, truth_users = truth_frames(world)
    first_day = np.maximum(world.item_created_day, 0)
    counts = {"users": len(world.users), "items": len(world.items), "events": 0, "quarantined": 0}
    storage.write(TRUTH_USERS.name, cfg.start, truth_users)
    ingest(storage, USERS.name, cfg.start, world.users)
    for d in range(cfg.days):
        day = cfg.start + timedelta(days=d)
        todays = first_day == d
        moved = drift_interests(cfg, world, d) if d else np.zeros(0, dtype=np.int64)
        if len(moved):  # truth_users is a dimension: the changed users' new interests from this day on
            storage.write(TRUTH_USERS.name, day, truth_frames(world)[1].iloc[moved].reset_index(drop=True))
        storage.write(TRUTH_ITEMS.name, day, truth_items[todays])
        ingest(storage, ITEMS.name, day, world.items[todays].reset_index(drop=True))
        frames, frame_truth = frames_for(cfg, world, np.flatnonzero(todays), d)
        storage.write(TRUTH_FRAMES.name, day, frame_truth)
        ingest(storage, FRAMES.name, day, frames, known_items=world.items["item_id"].to_numpy()[first_day <= d])
        stats = ingest(storage, EVENTS.name, day, events_for_day(cfg, world, d),
                       known_items=world.items["item_id"].to_numpy()[first_day <= d], buckets=cfg.buckets)
        counts["events"] += stats["rows"]
        counts["quarantined"] += stats["quarantined"]
        if progress:
            progress(f"{day}: {stats['rows']:,} events")
    return counts


def default_end() -> date:
    """Yesterday in UTC: the newest complete day, the one a daily run created today processes."""
    return datetime.now(timezone.utc).date() - timedelta(days=1)


def generator_config(users: int, items: int, days: int, end: date | str, seed: int = 0,
                     **extra: object) -> GeneratorConfig:
    return GeneratorConfig(users=users, items=items, days=days, end=as_date(end), seed=seed, **extra)  # type: ignore[arg-type]
