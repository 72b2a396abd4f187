"""Check everything a notification run read and turn it into dense numpy arrays (no storage here).

Users and items get dense positions (sorted ids) so per-(user, item) work is integer arithmetic:
a pair is the key ``user_pos * n_items + item_pos``. The step hands over :class:`Tables`: user
medoids of ``dt``, one global-medoid refresh (medoids, clusters, templates, overrides of the same
date), events of the history window ending on ``dt``, delivery logs and feedback of earlier dates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_notify.core.config import NotificationSettings, Settings
from recsys_notify.core.datasets import ContractError
from recsys_notify.core.embeddings import l2_normalize
from recsys_notify.global_medoids.overrides import active
from recsys_notify.notifications.frames import Keyframes

# the columns each input is read with (checked against its manifest when read)
COLUMNS = {
    "user_medoids": ["user_id", "item_id", "cluster_id", "importance", "rank"],
    "global_medoids": ["cluster_id", "language", "item_id", "vector", "source"],
    "global_clusters": ["item_id", "cluster_id", "distance"],
    "templates": ["cluster_id", "language", "template_id", "title", "body", "source", "keywords"],
    "overrides": ["override_id", "item_id", "action", "expires", "revoked_dt"],
    "items": ["item_id", "creator_id", "language", "duration_s", "created_ts", "caption"],
    "users": ["user_id", "language"],
    "delivery_log": ["user_id", "item_id", "holdout"],
    "delivery_feedback": ["user_id", "item_id", "engaged"],
    "frames": ["item_id", "frame_ts", "embedding", "image_uri"],
}
ANY_LANGUAGE = "*"
SEED_KINDS = ["medoid", "short_term"]  # the categories of ``Arrays.seeds["kind"]``


@dataclass
class Tables:
    """What the step read for one run; ``events`` and the logs are (days before dt, table) per partition."""

    user_medoids: pd.DataFrame
    global_medoids: pd.DataFrame
    global_clusters: pd.DataFrame
    templates: pd.DataFrame
    overrides: pd.DataFrame | None
    items: pd.DataFrame
    vectors: tuple[np.ndarray, np.ndarray]  # (item ids, matrix) of the configured embedding source
    users: pd.DataFrame
    events: list[tuple[int, pa.Table]]
    delivery_log: list[tuple[int, pd.DataFrame]]
    delivery_feedback: list[pd.DataFrame]
    frames: pd.DataFrame | None = None  # optional keyframes as of dt
    content: tuple[np.ndarray, np.ndarray] | None = None  # content vectors when ``vectors`` are not content
    # item_id, positives of every user (item_popularity); None: counted from ``events`` (all users read)
    popularity: pd.DataFrame | None = None


def positive(table: pa.Table | pa.RecordBatch, cfg: NotificationSettings) -> np.ndarray:
    """Positive views of an events table with engagement columns: completed, liked or shared."""
    return (table.column("completion").to_numpy() > cfg.positive_completion) \
        | table.column("liked").to_numpy(zero_copy_only=False) | table.column("shared").to_numpy(zero_copy_only=False)


def count_positives(tables: Iterable[pa.Table | pa.RecordBatch], cfg: NotificationSettings) -> pd.DataFrame:
    """Positive views per item (``item_id``, ``positives``) over ``tables``, read one at a time."""
    parts = []
    for table in tables:
        item, n = tally(table.column("item_id").to_numpy().astype(np.int64, copy=False)[positive(table, cfg)])
        parts.append(pd.DataFrame({"item_id": item, "positives": n}))
    return sum_positives(parts)


def sum_positives(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Counts (``item_id``, ``positives``) of several tables added per item, ascending item id."""
    parts = list(parts)
    ids = [np.zeros(0, np.int64), *(p["item_id"].to_numpy(np.int64) for p in parts)]
    item, n = tally(np.concatenate(ids), np.concatenate([np.zeros(0, np.int64),
                                                         *(p["positives"].to_numpy(np.int64) for p in parts)]))
    return pd.DataFrame({"item_id": item, "positives": n})


def tally(ids: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``ids`` and how often each occurs (or its summed integer ``weights``).

    A bincount when the ids span a range not much larger than their number, else a sort.
    """
    if len(ids) and int(ids.max()) - int(ids.min()) < 4 * len(ids) + 1_000_000:
        lo = int(ids.min())
        seen = np.bincount(ids - lo)
        item = np.flatnonzero(seen)
        n = seen if weights is None else np.bincount(ids - lo, weights).astype(np.int64)
        return item + lo, n[item]
    item, inverse = np.unique(ids, return_inverse=True)
    ones = np.ones(len(ids), np.int64) if weights is None else weights
    return item.astype(np.int64), np.bincount(inverse, ones, len(item)).astype(np.int64)


def event_columns(age: int, cfg: NotificationSettings) -> list[str]:
    """Columns an events partition ``age`` days before the run date is read with."""
    recent = ["completion", "liked", "shared"] if age < cfg.popularity_days else []
    return ["user_id", "item_id", *recent, *(["ts"] if age == 0 else [])]


@dataclass
class Catalogue:
    """Items known on the run date, by dense position (ascending item id)."""

    item_ids: np.ndarray
    lang: np.ndarray  # int16 code into ``languages``
    languages: list[str]
    vectors: np.ndarray  # l2-normalised, trimmed; zero row when an item has no vector
    age_days: np.ndarray
    pop: np.ndarray  # recent positive engagements
    prior: np.ndarray  # log(2 + pop) * freshness: the item part of the transparent score
    frame: pd.DataFrame  # item fields for templates (caption, creator_id, ...)
    index: IdIndex

    def positions(self, ids: pd.Series | np.ndarray, what: str) -> np.ndarray:
        """Dense positions of ``ids``; an id the catalogue does not know is an error naming ``what``."""
        pos, found = self.index.find(ids)
        if not found.all():
            bad = np.asarray(ids, dtype=np.int64)[~found]
            raise ContractError(f"{what}: {len(bad)} item id(s) not in items on the run date, e.g. {bad[0]}")
        return pos


@dataclass
class Arrays:
    dt: date
    catalogue: Catalogue
    user_ids: np.ndarray  # sorted
    user_lang: np.ndarray  # code into catalogue.languages, -1 = none/unknown (any language)
    seeds: pd.DataFrame  # user_pos, item_pos, weight, kind ('medoid'|'short_term'), sorted by user_pos
    cluster_ids: np.ndarray  # global clusters by position
    cluster_vectors: np.ndarray  # (C, d) normalised
    cluster_reps: pd.DataFrame  # cluster_pos, item_pos (global medoid representatives)
    item_cluster: np.ndarray  # cluster position per item (-1 unknown), from global_clusters
    members: pd.DataFrame  # cluster_pos, item_pos (cluster members from global_clusters)
    templates: pd.DataFrame
    excluded: np.ndarray  # sorted unique pair keys the user must not get (watched, sent, unengaged)
    allowed: np.ndarray  # bool per item: not blocked
    sent_counts: np.ndarray  # per user: notifications sent within the frequency-cap window
    yesterday_sent: pd.DataFrame  # delivery log of dt-1 (for engagement feedback)
    today_watched: np.ndarray  # sorted pair keys of any interaction on dt (an open)
    today_played: np.ndarray  # sorted pair keys of an interaction on dt reaching played_completion
    counts: dict[str, int] = field(default_factory=dict)
    user_language: np.ndarray | None = None  # the users' language codes as given (None = none), for the text
    keyframes: Keyframes | None = None
    content: np.ndarray | None = None  # content-space vectors by item position (frame choice)
    user_creator: np.ndarray | None = None  # per user the dominant creator id of their positives, -1 none

    @property
    def n_items(self) -> int:
        return len(self.catalogue.item_ids)

    def keys(self, user_pos: np.ndarray, item_pos: np.ndarray) -> np.ndarray:
        return user_pos.astype(np.int64) * self.n_items + item_pos


def unique_sorted(*parts: np.ndarray) -> np.ndarray:
    """Sorted distinct values of the arrays (sort-based: much faster than ``np.unique``'s hashing on large int64).

    One concatenated copy is sorted in place: no second copy of a large key set.
    """
    values = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    values.sort()
    return _drop_repeats(values)


def _drop_repeats(values: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array."""
    return values if len(values) < 2 else values[np.concatenate(([True], values[1:] != values[:-1]))]


def formatted(fmt: Callable[..., str], *columns: np.ndarray) -> np.ndarray:
    """``fmt(*row)`` (Python scalars) for each row of ``columns``, as an object array; each distinct row is
    formatted once (a day's messages repeat few items and templates). Floats are told apart by their bits."""
    key = np.zeros(len(columns[0]), np.int64)
    for column in columns:
        column = np.asarray(column)
        codes, distinct = pd.factorize(column.view(f"i{column.itemsize}") if column.dtype.kind == "f" else column,
                                       use_na_sentinel=False)
        key = pd.factorize(key * len(distinct) + codes)[0]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    texts = [fmt(*row) for row in zip(*(np.asarray(c)[first].tolist() for c in columns))]
    return np.array(texts, dtype=object)[inverse]


def union_sorted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values of two sorted distinct arrays: a stable sort merges the two runs in linear time."""
    if len(b) == 0:
        return a
    both = np.concatenate([a, b])
    both.sort(kind="stable")
    return _drop_repeats(both)


def dense_unique(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` of values in ``[0, size)``, by marking, not sorting."""
    present = np.zeros(size, dtype=bool)
    present[values] = True
    return np.flatnonzero(present), (np.cumsum(present) - 1)[values]


class IdIndex:
    """Dense positions of sorted ids: a direct table when ids are dense enough, else binary search."""

    def __init__(self, sorted_ids: np.ndarray):
        self.ids = sorted_ids
        self.table: np.ndarray | None = None
        if len(sorted_ids):
            self.lo = int(sorted_ids[0])
            span = int(sorted_ids[-1]) - self.lo + 1  # Python ints: ids at +-2^62 overflow an int64 difference
            if span <= 16 * len(sorted_ids) + 1_000_000:
                self.table = np.full(span, -1, dtype=np.int64)
                self.table[sorted_ids - self.lo] = np.arange(len(sorted_ids))

    def find(self, values: np.ndarray | pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``values`` (0 where absent) and whether each was found."""
        values = np.asarray(values, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
        if self.table is not None:
            inside = (values >= self.lo) & (values < self.lo + len(self.table))
            pos = np.where(inside, self.table[np.where(inside, values - self.lo, 0)], -1)
            return np.maximum(pos, 0), pos >= 0
        pos = np.searchsorted(self.ids, values).clip(max=len(self.ids) - 1)
        return pos, self.ids[pos] == values


@dataclass
class Window:
    """What a run takes from the window's events (known users and items only).

    Built partition by partition, so the window's events are never held as one set of arrays.
    """

    watched: np.ndarray  # sorted distinct pair keys of the history days
    today_watched: np.ndarray  # sorted distinct pair keys of any interaction on dt (an open)
    today_played: np.ndarray  # the same, reaching played_completion
    today: pd.DataFrame  # user_pos, item_pos, ts (int64 microseconds) of the positives on dt
    recent_user: np.ndarray  # user and item positions of the positives of the popularity days
    recent_item: np.ndarray
    history_events: int


def window_arrays(tables: list[tuple[int, pa.Table]], cfg: NotificationSettings, users: IdIndex,
                  items: IdIndex) -> Window:
    """The window's pair keys and positives straight from Arrow, one partition at a time."""
    n_items = len(items.ids)
    none = np.zeros(0, np.int64)
    watched, recent_user, recent_item = [], [none], [none]
    today_watched, today_played = none, none
    today = pd.DataFrame({"user_pos": none, "item_pos": none, "ts": none})
    for age, t in tables:
        u, u_ok = users.find(t.column("user_id").to_numpy())
        i, i_ok = items.find(t.column("item_id").to_numpy())
        ok = u_ok & i_ok
        if not ok.all():
            u, i = u[ok], i[ok]
        keys = u * n_items + i
        if age < cfg.history_days:
            watched.append(keys)
        pos = np.zeros(len(keys), bool)
        if "completion" in t.column_names:
            pos = positive(t, cfg)[ok]
            recent_user.append(u[pos])
            recent_item.append(i[pos])
        if age == 0:
            today_watched = unique_sorted(keys)
            if "completion" in t.column_names:
                today_played = unique_sorted(keys[(t.column("completion").to_numpy() >= cfg.played_completion)[ok]])
            ts = t.column("ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()[ok]
            today = pd.DataFrame({"user_pos": u[pos], "item_pos": i[pos], "ts": ts[pos]})
    return Window(unique_sorted(*watched), today_watched, today_played, today, np.concatenate(recent_user),
                  np.concatenate(recent_item), sum(len(k) for k in watched))


def _catalogue(items: pd.DataFrame, vectors_of: tuple[np.ndarray, np.ndarray], dt: date) -> Catalogue:
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    ids = items["item_id"].to_numpy(np.int64)
    languages = sorted(items["language"].astype(str).unique())
    lang = pd.Categorical(items["language"].astype(str), categories=languages).codes.astype(np.int16)
    vid, vec = vectors_of
    vectors = np.zeros((len(ids), vec.shape[1]), dtype=np.float32)
    index = IdIndex(ids)
    pos, ok = index.find(vid)
    vectors[pos[ok]] = l2_normalize(vec[ok])
    end = pd.Timestamp(dt + timedelta(days=1), tz="UTC")
    age = ((end - items["created_ts"]).dt.total_seconds().to_numpy() / 86_400).clip(min=0)
    zeros = np.zeros(len(ids))
    return Catalogue(ids, lang, languages, vectors, age, zeros, zeros, items, index)


def _set_popularity(cat: Catalogue, tables: Tables, cfg: NotificationSettings) -> None:
    """Popularity = positive interactions in the last ``popularity_days``; prior = log(2 + pop) x freshness."""
    popularity = tables.popularity
    if popularity is None:
        popularity = count_positives((t for age, t in tables.events if age < cfg.popularity_days), cfg)
    pos, known = cat.index.find(popularity["item_id"])
    cat.pop = np.zeros(len(cat.item_ids))
    cat.pop[pos[known]] = popularity["positives"].to_numpy(np.float64)[known]
    cat.prior = np.log(2.0 + cat.pop) * (1.0 + cfg.freshness_boost * np.exp(-cat.age_days / cfg.freshness_days))


def build(tables: Tables, settings: Settings, dt: date) -> Arrays:
    """The dense arrays selection, ranking and evaluation use."""
    cfg = settings.notifications
    medoids, gm, gc, templates = tables.user_medoids, tables.global_medoids, tables.global_clusters, tables.templates
    blocked = np.zeros(0, dtype=np.int64)
    if tables.overrides is not None:
        live = active(tables.overrides, dt)
        blocked = live.loc[live["action"] == "block", "item_id"].dropna().to_numpy(np.int64)

    cat = _catalogue(tables.items, tables.vectors, dt)
    users = tables.users
    user_ids = unique_sorted(np.concatenate([users["user_id"].to_numpy(np.int64),
                                             medoids["user_id"].to_numpy(np.int64)]))
    user_lang_str = np.full(len(user_ids), None, dtype=object)
    uindex = IdIndex(user_ids)
    user_lang_str[uindex.find(users["user_id"])[0]] = users["language"].astype(str).to_numpy()
    # a user's language that no item has means "no language filter" (-1), like a missing one
    user_lang = pd.Categorical(user_lang_str, categories=cat.languages).codes.astype(np.int16)
    events = window_arrays(tables.events, cfg, uindex, cat.index)
    _set_popularity(cat, tables, cfg)

    # seeds: long-term medoids (importance normalised per user) + optional short-term positives of dt
    imp = medoids["importance"].to_numpy(np.float64)
    if not np.isfinite(imp).all():
        raise ContractError("user_medoids: importance has NaN or inf values")
    m_user = uindex.find(medoids["user_id"])[0]
    top = np.full(len(user_ids), -np.inf)
    np.maximum.at(top, m_user, imp)
    top = top[m_user]
    seed_parts = [(m_user, cat.positions(medoids["item_id"], "user_medoids"),
                   np.where(top > 0, imp / np.where(top > 0, top, 1), 1.0), np.zeros(len(imp), bool))]

    n_items = len(cat.item_ids)
    if cfg.short_term_enabled and cfg.short_term_weight > 0 and len(events.today):
        recent = (events.today.sort_values(["user_pos", "ts", "item_pos"], ascending=[True, False, True])
                  .drop_duplicates(["user_pos", "item_pos"]).groupby("user_pos").head(cfg.short_term_items))
        seed_parts.append((recent["user_pos"].to_numpy(), recent["item_pos"].to_numpy(),
                           np.full(len(recent), cfg.short_term_weight), np.ones(len(recent), bool)))
    s_user, s_item, s_weight, s_short = (np.concatenate(column) for column in zip(*seed_parts))
    order = np.argsort((s_user * 2 + s_short) * n_items + s_item, kind="stable")  # by user, medoids first, item
    order = order[cat.vectors.any(axis=1)[s_item[order]]]  # an item without a vector seeds nothing
    seeds_df = pd.DataFrame({"user_pos": s_user[order], "item_pos": s_item[order], "weight": s_weight[order],
                             "kind": pd.Categorical.from_codes(s_short[order].astype(np.int8), SEED_KINDS)})

    # delivery history (earlier dates only, so a rerun of dt never sees its own output)
    sent_keys, sent_counts = [], np.zeros(len(user_ids), dtype=np.int64)
    yesterday = pd.DataFrame(columns=["user_id", "item_id"])
    for age, log in tables.delivery_log:
        log = log[~log["holdout"].astype(bool)]
        lu, u_ok = uindex.find(log["user_id"])
        li, i_ok = cat.index.find(log["item_id"])
        log, lu, li = log[u_ok & i_ok], lu[u_ok & i_ok], li[u_ok & i_ok]
        if age <= cfg.sent_lookback_days:
            sent_keys.append(lu.astype(np.int64) * n_items + li)
        if age < cfg.max_per_user_days:
            sent_counts += np.bincount(lu, minlength=len(user_ids))
        if age == 1:
            yesterday = log[["user_id", "item_id"]]
    unengaged = _unengaged_keys(tables.delivery_feedback, uindex, cat.index)
    excluded = union_sorted(events.watched, unique_sorted(*sent_keys, unengaged))

    allowed = ~np.isin(cat.item_ids, blocked)
    clusters = _clusters(gm, gc, cat, settings)
    counts = {"users": len(user_ids), "items": n_items, "user_medoid_rows": len(medoids),
              "users_with_seeds": int(np.count_nonzero(np.bincount(seeds_df["user_pos"], minlength=1))),
              "blocked_items": int((~allowed).sum()),
              "history_events": events.history_events}
    return Arrays(dt, cat, user_ids, user_lang, seeds_df, *clusters, templates, excluded, allowed, sent_counts,
                  yesterday, events.today_watched, events.today_played, counts, user_lang_str,
                  *_frames(tables, cat),
                  dominant_creators(events, cat, len(user_ids), cfg) if cfg.creator_affinity else None)


MIN_CREATOR_POSITIVES = 3


def dominant_creators(events: Window, cat: Catalogue, n_users: int, cfg: NotificationSettings) -> np.ndarray:
    """Per user the creator of at least ``creator_min_share`` (and 3) of their recent positives, else -1.

    Recent = the ``popularity_days`` whose engagement columns are read (the positives the popularity uses).
    """
    out = np.full(n_users, -1, dtype=np.int64)
    if not len(events.recent_user):
        return out
    creator = cat.frame["creator_id"].to_numpy(np.int64)[events.recent_item]
    pairs = pd.DataFrame({"user": events.recent_user, "creator": creator}).value_counts().rename("n").reset_index()
    total = pairs.groupby("user")["n"].transform("sum")
    top = pairs.assign(share=pairs["n"] / total).sort_values(["user", "n", "creator"], ascending=[True, False, True])
    top = top.drop_duplicates("user")
    top = top[(top["share"] >= cfg.creator_min_share) & (top["n"] >= MIN_CREATOR_POSITIVES)]
    out[top["user"].to_numpy()] = top["creator"].to_numpy()
    return out


def _frames(tables: Tables, cat: Catalogue) -> tuple[Keyframes | None, np.ndarray]:
    """Keyframes of known items and the content vectors they are compared in (the catalogue's, if content)."""
    content = cat.vectors
    if tables.content is not None:
        content = np.zeros((len(cat.item_ids), tables.content[1].shape[1]), np.float32)
        pos, ok = cat.index.find(tables.content[0])
        content[pos[ok]] = l2_normalize(tables.content[1][ok])
    return (None if tables.frames is None else keyframes(tables.frames, cat, content.shape[1])), content


def keyframes(frames: pd.DataFrame, cat: Catalogue, dim: int) -> Keyframes:
    """``frames`` rows of items the catalogue knows, by item position (vectors trimmed to ``dim``)."""
    pos, ok = cat.index.find(frames["item_id"])
    return Keyframes.of(frames[ok].reset_index(drop=True), pos[ok], dim)


def _unengaged_keys(feedback: list[pd.DataFrame], users: IdIndex, items: IdIndex) -> np.ndarray:
    """Pairs sent earlier (within the lookback) not engaged the next day (not opened, or opened but not played)."""
    keys = []
    for fb in feedback:
        fb = fb[~fb["engaged"].astype(bool)]
        u, u_ok = users.find(fb["user_id"])
        i, i_ok = items.find(fb["item_id"])
        keys.append(u[u_ok & i_ok].astype(np.int64) * len(items.ids) + i[u_ok & i_ok])
    return np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)


def _clusters(gm: pd.DataFrame, gc: pd.DataFrame, cat: Catalogue, settings: Settings):
    """Cluster vectors (one per cluster, the ``*`` row first), representatives, members, item -> cluster."""
    if gm.empty:
        raise ContractError("global_medoids: partition has no rows")
    gm = gm.assign(_any=(gm["language"].astype(str) != ANY_LANGUAGE)).sort_values(["cluster_id", "_any", "language"])
    first = gm.drop_duplicates("cluster_id")
    cluster_ids = first["cluster_id"].to_numpy(np.int64)
    try:
        vectors = np.stack(first["vector"].to_numpy()).astype(np.float32)
    except ValueError as exc:
        raise ContractError(f"global_medoids: vectors have different lengths ({exc})") from None
    dim = cat.vectors.shape[1]
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ContractError(f"global_medoids: vector length {vectors.shape[-1]} != item vector length {dim} "
                            f"(embedding.trimmed_dim={settings.embedding.trimmed_dim}, "
                            f"source={settings.embedding.source})")
    if not np.isfinite(vectors).all():
        raise ContractError("global_medoids: vector has NaN or inf values")
    reps = pd.DataFrame({"cluster_pos": np.searchsorted(cluster_ids, gm["cluster_id"].to_numpy(np.int64)),
                         "item_pos": cat.positions(gm["item_id"], "global_medoids")}).drop_duplicates()
    gc = gc[np.isin(gc["cluster_id"].to_numpy(np.int64), cluster_ids)]
    members = pd.DataFrame({"cluster_pos": np.searchsorted(cluster_ids, gc["cluster_id"].to_numpy(np.int64)),
                            "item_pos": cat.positions(gc["item_id"], "global_clusters")}).drop_duplicates("item_pos")
    item_cluster = np.full(len(cat.item_ids), -1, dtype=np.int64)
    item_cluster[members["item_pos"].to_numpy()] = members["cluster_pos"].to_numpy()
    item_cluster[reps["item_pos"].to_numpy()] = reps["cluster_pos"].to_numpy()
    return cluster_ids, l2_normalize(vectors), reps, item_cluster, members
