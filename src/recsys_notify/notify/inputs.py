"""Load and check everything a notification run reads, as dense numpy arrays.

Users and items get dense positions (sorted ids) so per-(user, item) work is integer arithmetic:
a pair is the key ``user_pos * n_items + item_pos``. Everything is read for the run date only:
user medoids of ``dt``, the newest global medoids / clusters / templates / overrides on or before
``dt``, events of the history window ending on ``dt``, delivery logs of earlier dates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from recsys_notify.config import Settings
from recsys_notify.contract import ContractError
from recsys_notify.embeddings import item_vectors, l2_normalize
from recsys_notify.storage import Storage, as_date

REQUIRED = {
    "user_medoids": ["user_id", "item_id", "cluster_id", "importance", "rank"],
    "global_medoids": ["cluster_id", "language", "item_id", "vector", "source"],
    "global_clusters": ["item_id", "cluster_id", "distance"],
    "templates": ["cluster_id", "language", "template_id", "title", "body", "source"],
    "overrides": ["item_id", "action"],
    "delivery_log": ["user_id", "item_id", "holdout"],
}
ANY_LANGUAGE = "*"


def check_columns(dataset: str, frame: pd.DataFrame) -> None:
    """Fail before writing anything when an upstream table lacks a documented column."""
    missing = [c for c in REQUIRED[dataset] if c not in frame.columns]
    if missing:
        raise ContractError(f"{dataset}: missing column(s) {', '.join(missing)}; "
                            f"has {', '.join(map(str, frame.columns))}")


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

    def positions(self, ids: pd.Series | np.ndarray, what: str) -> np.ndarray:
        """Dense positions of ``ids``; an id the catalogue does not know is an error naming ``what``."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids).clip(max=max(len(self.item_ids) - 1, 0))
        bad = (self.item_ids[pos] != ids) if len(self.item_ids) else np.ones(len(ids), bool)
        if bad.any():
            raise ContractError(f"{what}: {int(bad.sum())} item id(s) not in items on the run date, e.g. {ids[bad][0]}")
        return pos


@dataclass
class Inputs:
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
    today_watched: np.ndarray  # sorted pair keys of any interaction on dt
    lineage: dict[str, list[date]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.catalogue.item_ids)

    def keys(self, user_pos: np.ndarray, item_pos: np.ndarray) -> np.ndarray:
        return user_pos.astype(np.int64) * self.n_items + item_pos


def is_positive(events: pd.DataFrame, completion: float) -> np.ndarray:
    return ((events["completion"].to_numpy() > completion) | events["liked"].to_numpy()
            | events["shared"].to_numpy())


def _latest(storage: Storage, dataset: str, dt: date, lineage: dict[str, list[date]]) -> pd.DataFrame:
    day = storage.latest_on_or_before(dataset, dt)
    lineage[dataset] = [day]
    frame = storage.read(dataset, day)
    check_columns(dataset, frame)
    return frame


def _catalogue(storage: Storage, settings: Settings, dt: date, events: pd.DataFrame) -> Catalogue:
    cfg = settings.notifications
    items = storage.read_upto("items", dt, columns=["item_id", "creator_id", "language", "duration_s",
                                                    "created_ts", "caption"])
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    ids = items["item_id"].to_numpy(np.int64)
    languages = sorted(items["language"].astype(str).unique())
    lang = pd.Categorical(items["language"].astype(str), categories=languages).codes.astype(np.int16)
    vid, vec = item_vectors(storage, dt, settings.embedding.source, settings.embedding.trimmed_dim)
    vectors = np.zeros((len(ids), vec.shape[1]), dtype=np.float32)
    pos = np.searchsorted(ids, vid).clip(max=len(ids) - 1)
    ok = ids[pos] == vid
    vectors[pos[ok]] = l2_normalize(vec[ok])

    end = pd.Timestamp(dt + timedelta(days=1), tz="UTC")
    age = ((end - items["created_ts"]).dt.total_seconds().to_numpy() / 86_400).clip(min=0)
    recent = events[events["ts"] >= end - pd.Timedelta(days=cfg.popularity_days)]
    recent = recent[is_positive(recent, cfg.positive_completion)]
    ipos = np.searchsorted(ids, recent["item_id"].to_numpy(np.int64)).clip(max=len(ids) - 1)
    ipos = ipos[ids[ipos] == recent["item_id"].to_numpy(np.int64)]
    pop = np.bincount(ipos, minlength=len(ids)).astype(np.float64)
    prior = np.log(2.0 + pop) * (1.0 + cfg.freshness_boost * np.exp(-age / cfg.freshness_days))
    return Catalogue(ids, lang, languages, vectors, age, pop, prior, items)


def load_inputs(storage: Storage, settings: Settings, dt: date | str) -> Inputs:
    """Read every upstream table of the run date and build the dense arrays the steps use."""
    dt = as_date(dt)
    cfg = settings.notifications
    lineage: dict[str, list[date]] = {}

    medoids = storage.read("user_medoids", dt)
    check_columns("user_medoids", medoids)
    lineage["user_medoids"] = [dt]
    gm = _latest(storage, "global_medoids", dt, lineage)
    gc = _latest(storage, "global_clusters", dt, lineage)
    templates = _latest(storage, "templates", dt, lineage)
    blocked = np.zeros(0, dtype=np.int64)
    if any(d <= dt for d in storage.dates("overrides")):
        ov = _latest(storage, "overrides", dt, lineage)
        blocked = _blocked_items(ov, dt)

    start = dt - timedelta(days=max(cfg.history_days, cfg.popularity_days) - 1)
    events = storage.read_range("events", start, dt, allow_missing=True,
                                columns=["user_id", "item_id", "ts", "completion", "liked", "shared"])
    lineage["events"] = [d for d in storage.dates("events") if start <= d <= dt]
    cat = _catalogue(storage, settings, dt, events)

    users = storage.read_upto("users", dt, columns=["user_id", "language"])
    user_ids = np.union1d(users["user_id"].to_numpy(np.int64), medoids["user_id"].to_numpy(np.int64))
    lang_of = pd.Series(users["language"].astype(str).to_numpy(), index=users["user_id"].to_numpy(np.int64))
    lang_of = lang_of[~lang_of.index.duplicated()]
    user_lang_str = lang_of.reindex(user_ids).to_numpy()
    # a user's language that no item has means "no language filter" (-1), like a missing one
    user_lang = pd.Categorical(user_lang_str, categories=cat.languages).codes.astype(np.int16)

    def upos(ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(user_ids, np.asarray(ids, dtype=np.int64))

    # seeds: long-term medoids (importance normalised per user) + optional short-term positives of dt
    imp = medoids["importance"].to_numpy(np.float64)
    if not np.isfinite(imp).all():
        raise ContractError("user_medoids: importance has NaN or inf values")
    m_user = upos(medoids["user_id"].to_numpy(np.int64))
    top = pd.Series(imp).groupby(m_user).transform("max").to_numpy()
    seeds = [pd.DataFrame({"user_pos": m_user, "item_pos": cat.positions(medoids["item_id"], "user_medoids"),
                           "weight": np.where(top > 0, imp / np.where(top > 0, top, 1), 1.0), "kind": "medoid"})]

    in_cat = np.isin(events["item_id"].to_numpy(np.int64), cat.item_ids)
    in_users = np.isin(events["user_id"].to_numpy(np.int64), user_ids)
    events = events[in_cat & in_users]
    e_user = upos(events["user_id"].to_numpy(np.int64))
    e_item = np.searchsorted(cat.item_ids, events["item_id"].to_numpy(np.int64))
    n_items = len(cat.item_ids)
    day_start = pd.Timestamp(dt, tz="UTC")
    hist_start = pd.Timestamp(dt - timedelta(days=cfg.history_days - 1), tz="UTC")
    in_hist = (events["ts"] >= hist_start).to_numpy()
    watched = np.unique(e_user[in_hist].astype(np.int64) * n_items + e_item[in_hist])
    on_dt = (events["ts"] >= day_start).to_numpy()
    today_watched = np.unique(e_user[on_dt].astype(np.int64) * n_items + e_item[on_dt])
    today = on_dt & is_positive(events, cfg.positive_completion)
    if cfg.short_term_enabled and cfg.short_term_weight > 0 and today.any():
        recent = pd.DataFrame({"user_pos": e_user[today], "item_pos": e_item[today], "ts": events["ts"][today].to_numpy()})
        recent = (recent.sort_values(["user_pos", "ts", "item_pos"], ascending=[True, False, True])
                  .drop_duplicates(["user_pos", "item_pos"]).groupby("user_pos").head(cfg.short_term_items))
        seeds.append(pd.DataFrame({"user_pos": recent["user_pos"].to_numpy(), "item_pos": recent["item_pos"].to_numpy(),
                                   "weight": cfg.short_term_weight, "kind": "short_term"}))
    seeds_df = pd.concat(seeds, ignore_index=True).sort_values(["user_pos", "kind", "item_pos"], kind="stable")
    no_vector = ~cat.vectors[seeds_df["item_pos"].to_numpy()].any(axis=1)
    seeds_df = seeds_df[~no_vector].reset_index(drop=True)

    # delivery history (earlier dates only, so a rerun of dt never sees its own output)
    log_start = dt - timedelta(days=max(cfg.sent_lookback_days, cfg.max_per_user_days))
    log_days = [d for d in storage.dates("delivery_log") if log_start <= d < dt]
    lineage["delivery_log"] = log_days
    sent_keys, sent_counts = [], np.zeros(len(user_ids), dtype=np.int64)
    cap_start = dt - timedelta(days=cfg.max_per_user_days - 1)
    yesterday = pd.DataFrame(columns=["user_id", "item_id"])
    for day in log_days:
        log = storage.read("delivery_log", day, columns=["user_id", "item_id", "holdout"])
        check_columns("delivery_log", log)
        log = log[~log["holdout"].astype(bool)]
        log = log[np.isin(log["user_id"].to_numpy(np.int64), user_ids) & np.isin(log["item_id"].to_numpy(np.int64), cat.item_ids)]
        lu = upos(log["user_id"].to_numpy(np.int64))
        sent_keys.append(lu.astype(np.int64) * n_items + np.searchsorted(cat.item_ids, log["item_id"].to_numpy(np.int64)))
        if day >= cap_start:
            sent_counts += np.bincount(lu, minlength=len(user_ids))
        if day == dt - timedelta(days=1):
            yesterday = log[["user_id", "item_id"]]
    unengaged = _unengaged_keys(storage, dt, cfg.unengaged_lookback_days, user_ids, cat.item_ids, lineage)
    excluded = np.unique(np.concatenate([watched, *sent_keys, unengaged]))

    allowed = ~np.isin(cat.item_ids, blocked)
    clusters = _clusters(gm, gc, cat, settings)
    counts = {"users": len(user_ids), "items": n_items, "user_medoid_rows": len(medoids),
              "users_with_seeds": int(seeds_df["user_pos"].nunique()), "blocked_items": int((~allowed).sum()),
              "history_events": int(in_hist.sum())}
    return Inputs(dt, cat, user_ids, user_lang, seeds_df, *clusters, templates, excluded, allowed, sent_counts,
                  yesterday, today_watched, lineage, counts)


def _blocked_items(overrides: pd.DataFrame, dt: date) -> np.ndarray:
    """Items under an active ``block`` override (not revoked, not past ``expires`` when those columns exist)."""
    live = overrides["action"].astype(str) == "block"
    if "revoked_dt" in overrides:
        live &= overrides["revoked_dt"].isna()
    if "expires" in overrides:
        expires = pd.to_datetime(overrides["expires"].astype(object), utc=True)
        live &= expires.isna() | (expires >= pd.Timestamp(dt, tz="UTC"))
    return overrides.loc[live, "item_id"].dropna().to_numpy(np.int64)


def _unengaged_keys(storage: Storage, dt: date, lookback: int, user_ids: np.ndarray, item_ids: np.ndarray,
                    lineage: dict[str, list[date]]) -> np.ndarray:
    """Pairs sent earlier (within ``lookback`` days) that got no positive engagement the next day."""
    days = [d for d in storage.dates("delivery_feedback") if dt - timedelta(days=lookback) <= d <= dt - timedelta(days=1)]
    lineage["delivery_feedback"] = days
    keys = []
    for day in days:
        fb = storage.read("delivery_feedback", day, columns=["user_id", "item_id", "engaged"])
        fb = fb[~fb["engaged"].astype(bool)]
        u = fb["user_id"].to_numpy(np.int64)
        i = fb["item_id"].to_numpy(np.int64)
        ok = np.isin(u, user_ids) & np.isin(i, item_ids)
        keys.append(np.searchsorted(user_ids, u[ok]).astype(np.int64) * len(item_ids) + np.searchsorted(item_ids, i[ok]))
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
                            f"(embedding.trimmed_dim={settings.embedding.trimmed_dim}, source={settings.embedding.source})")
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
