"""From raw events to tower inputs: window, filters, labels, weights, negatives and features.

Training window: the ``window_days`` days before the validation day ``dt`` (the event window ending
on ``dt - 1``). Events are aggregated per (user, item) first, so a rewatch is one interaction (max
completion, any like/share, summed watch time). The step resolves :func:`requests` and builds the
:class:`Interactions` with :func:`interactions_from`.

Features use the training window as history. For a training example the example's own interaction
is left out of the user's history features (means, last 5, cluster distribution), otherwise a
positive's own embedding would sit in the user's positive mean and the model would learn to look
itself up. Count/CTR features are *not* leave-one-out: ``(pos - y) / (n - 1)`` takes two values
per item that differ only by the label, which a model with id embeddings decodes perfectly; the
window CTR is the same for every example of an item, so it carries at most a 1/n share of one label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from recsys_notify.core.config import InteractionWeights
from recsys_notify.core.datasets import EVENTS, ITEMS
from recsys_notify.core.embeddings import item_vectors, vectors_request
from recsys_notify.core.inputs import Inputs, Request, as_of, day, window
from recsys_notify.core.interaction_weights import weight_table
from recsys_notify.two_tower.config import RATIOS, ExperimentConfig, parse_label_rule

LAST_N = 5
EVENT_COLUMNS = ["user_id", "item_id", "ts", "watch_time_s", "completion", "liked", "shared"]


@dataclass
class Interactions:
    """Aggregated (user, item) interactions of the training window and validation day, plus the catalogue."""

    train: pd.DataFrame
    valid: pd.DataFrame
    item_ids: np.ndarray
    item_matrix: np.ndarray
    creator_ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def aggregate(events: pd.DataFrame, label_rule: str) -> pd.DataFrame:
    """One row per (user, item) with the label from ``label_rule``."""
    agg = (events.groupby(["user_id", "item_id"], sort=False)
           .agg(ts=("ts", "max"), watch_time_s=("watch_time_s", "sum"), completion=("completion", "max"),
                liked=("liked", "any"), shared=("shared", "any"))
           .reset_index())
    agg["label"] = parse_label_rule(label_rule)(agg).astype(np.int8)
    return agg


def requests(cfg: ExperimentConfig, history_end: date, catalogue_dt: date, prefix: str) -> dict[str, Request]:
    """What an experiment's features read: its event window ending ``history_end`` and the catalogue of a day."""
    return {f"{prefix}events": window(EVENTS, history_end, cfg.window_days),
            f"{prefix}vectors": vectors_request(cfg.embedding_source, catalogue_dt),
            f"{prefix}items": as_of(ITEMS, catalogue_dt)}


def train_requests(cfg: ExperimentConfig, dt: date) -> dict[str, Request]:
    """Training data of an experiment validated on ``dt``: the window before ``dt``, ``dt`` itself, the catalogue."""
    return {**requests(cfg, dt - timedelta(days=1), dt, "train_"), "valid_events": day(EVENTS, dt)}


def catalogue(inputs: Inputs, cfg: ExperimentConfig, prefix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item ids with their embeddings and creators, from the resolved ``{prefix}vectors`` / ``{prefix}items``."""
    item_ids, matrix = item_vectors(inputs, cfg.embedding_source, cfg.embedding_dim, role=f"{prefix}vectors")
    items = inputs.dimension(f"{prefix}items", ["item_id", "creator_id"])
    creators = items.set_index("item_id")["creator_id"].reindex(item_ids).fillna(-1).to_numpy(np.int64)
    return item_ids, matrix, creators


def events_from(inputs: Inputs, role: str, cfg: ExperimentConfig) -> pd.DataFrame:
    """Aggregated interactions of the resolved ``role`` under the experiment's label rule."""
    return aggregate(inputs.frame(role, EVENT_COLUMNS), cfg.label_rule)


def interactions_from(inputs: Inputs, cfg: ExperimentConfig) -> Interactions:
    """The training window, the validation day and the catalogue of :func:`train_requests`."""
    days = inputs["train_events"].dates
    item_ids, matrix, creators = catalogue(inputs, cfg, "train_")
    return Interactions(events_from(inputs, "train_events", cfg), events_from(inputs, "valid_events", cfg),
                        item_ids, matrix, creators,
                        {"train_start": days[0], "train_end": days[-1], "valid_day": inputs["valid_events"].dates[0],
                         "train_days": len(days), "train_window_clipped": inputs["train_events"].clipped})


# ----- features -----------------------------------------------------------------------------------

@dataclass
class Context:
    """History and count statistics of one window, indexed for fast feature lookups."""

    users: pd.Index
    pos_sum: np.ndarray
    pos_cnt: np.ndarray
    neg_sum: np.ndarray
    neg_cnt: np.ndarray
    hist: pd.DataFrame  # user_id, item_id, hist_pos, hist_neg, in_hist (capped history membership)
    last: np.ndarray  # (users, LAST_N + 1) catalogue positions, most recent first, -1 padded
    clusters: np.ndarray  # (users, n_clusters) counts over capped history
    user_stats: np.ndarray  # (users, 4): n, positives, sum completion, sum log1p watch
    item_stats: np.ndarray  # (catalogue, 3): n, positives, sum completion
    creator_stats: pd.DataFrame  # index creator_id: n, pos, comp


def _stats(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    frame = frame.assign(lw=np.log1p(frame["watch_time_s"].to_numpy(float)))
    return frame.groupby(key).agg(n=("label", "size"), pos=("label", "sum"), comp=("completion", "sum"),
                                  lw=("lw", "sum"))


class FeatureSpace:
    """Fitted feature definition (clusters, normalisation, id vocabularies) shared by training and serving."""

    def __init__(self, cfg: ExperimentConfig, item_ids: np.ndarray, item_matrix: np.ndarray,
                 creator_ids: np.ndarray, centroids: np.ndarray, norms: dict[str, np.ndarray],
                 item_vocab: np.ndarray, creator_vocab: np.ndarray):
        self.cfg = cfg
        self.centroids = centroids
        self.norms = norms
        self.item_vocab = item_vocab
        self.creator_vocab = creator_vocab
        self.set_catalogue(item_ids, item_matrix, creator_ids)

    def set_catalogue(self, item_ids: np.ndarray, item_matrix: np.ndarray, creator_ids: np.ndarray) -> None:
        """Swap in the catalogue of another day (serving) keeping the fitted parts."""
        if item_matrix.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"item embeddings have {item_matrix.shape[1]} dims, "
                             f"model expects {self.centroids.shape[1]}")
        if not np.isfinite(item_matrix).all():
            raise ValueError("item embeddings contain NaN or infinite values")
        self.item_index = pd.Index(item_ids)
        self.item_ids = item_ids
        self.item_matrix = item_matrix.astype(np.float32)
        self.creator_ids = creator_ids
        d2 = ((item_matrix[:, None, :] - self.centroids[None]) ** 2).sum(-1) if len(item_ids) < 20000 else None
        self.item_cluster = d2.argmin(1) if d2 is not None else _nearest(item_matrix, self.centroids)

    @classmethod
    def fit(cls, cfg: ExperimentConfig, inter: Interactions, train: pd.DataFrame) -> FeatureSpace:
        km = KMeans(n_clusters=min(cfg.n_clusters, len(inter.item_ids)), n_init=2, random_state=cfg.seed,
                    max_iter=100).fit(inter.item_matrix)
        centroids = np.zeros((cfg.n_clusters, inter.item_matrix.shape[1]), np.float32)
        centroids[: len(km.cluster_centers_)] = km.cluster_centers_
        space = cls(cfg, inter.item_ids, inter.item_matrix, inter.creator_ids, centroids, {},
                    np.unique(train["item_id"].to_numpy()),
                    np.unique(inter.creator_ids[inter.creator_ids >= 0]))
        ctx = space.context(inter.train)
        users = train["user_id"].unique()
        items = np.unique(train["item_id"].to_numpy())
        space.norms["user"] = _moments(space._user_stat_raw(ctx, users))
        space.norms["item"] = _moments(space._item_stat_raw(ctx, items))
        return space

    # -- context --
    def context(self, interactions: pd.DataFrame) -> Context:
        """Histories and counts of an aggregated window (items outside the catalogue are ignored)."""
        cfg = self.cfg
        frame = interactions.assign(pos=self.item_index.get_indexer(interactions["item_id"]))
        frame = frame[frame["pos"] >= 0]
        users = pd.Index(np.unique(frame["user_id"].to_numpy()))
        avg_watch = frame.groupby("item_id")["watch_time_s"].transform("mean")
        frame = frame.assign(uidx=users.get_indexer(frame["user_id"]),
                             hist_pos=frame["label"] == 1,
                             hist_neg=(frame["label"] == 0) & (frame["watch_time_s"] < avg_watch))
        frame = frame.sort_values(["uidx", "ts", "item_id"], ascending=[True, False, True], kind="stable")
        rank = frame.groupby("uidx").cumcount().to_numpy()
        capped = frame[rank < cfg.history_len]
        n_users, dim = len(users), self.item_matrix.shape[1]
        pos_sum = np.zeros((n_users, dim), np.float32)
        neg_sum = np.zeros((n_users, dim), np.float32)
        hp, hn = capped[capped["hist_pos"]], capped[capped["hist_neg"]]
        np.add.at(pos_sum, hp["uidx"].to_numpy(), self.item_matrix[hp["pos"].to_numpy()])
        np.add.at(neg_sum, hn["uidx"].to_numpy(), self.item_matrix[hn["pos"].to_numpy()])
        last = np.full((n_users, LAST_N + 1), -1, np.int64)
        top = frame[rank <= LAST_N]
        last[top["uidx"].to_numpy(), rank[rank <= LAST_N]] = top["pos"].to_numpy()
        clusters = np.zeros((n_users, cfg.n_clusters), np.float32)
        np.add.at(clusters, (capped["uidx"].to_numpy(), self.item_cluster[capped["pos"].to_numpy()]), 1.0)
        us = _stats(frame, "uidx").reindex(range(n_users), fill_value=0)
        its = _stats(frame, "pos").reindex(range(len(self.item_ids)), fill_value=0)
        frame = frame.assign(creator_id=self.creator_ids[frame["pos"].to_numpy()])
        return Context(
            users=users, pos_sum=pos_sum, pos_cnt=np.bincount(hp["uidx"], minlength=n_users).astype(np.float32),
            neg_sum=neg_sum, neg_cnt=np.bincount(hn["uidx"], minlength=n_users).astype(np.float32),
            hist=capped[["user_id", "item_id", "hist_pos", "hist_neg"]].assign(in_hist=True),
            last=last, clusters=clusters, user_stats=us[["n", "pos", "comp", "lw"]].to_numpy(np.float32),
            item_stats=its[["n", "pos", "comp"]].to_numpy(np.float32),
            creator_stats=_stats(frame, "creator_id")[["n", "pos", "comp"]])

    # -- user tower input --
    @property
    def user_dim(self) -> int:
        d, parts = self.item_matrix.shape[1], 0
        parts += 2 * d if "history_mean" in self.cfg.user_features else 0
        parts += LAST_N * d if "last5_concat" in self.cfg.user_features else 0
        parts += self.cfg.n_clusters if "cluster_distribution" in self.cfg.user_features else 0
        parts += 4 if "user_stats" in self.cfg.user_features else 0
        return parts

    @property
    def item_dim(self) -> int:
        return self.item_matrix.shape[1] + 3 * len(self.cfg.item_features)

    def user_x(self, ctx: Context, user_ids: np.ndarray, own: pd.DataFrame | None = None) -> np.ndarray:
        """User features; ``own`` (the examples' item_id per row) is left out of the history features."""
        feats = self.cfg.user_features
        uidx = ctx.users.get_indexer(user_ids)
        known = uidx >= 0
        u = np.where(known, uidx, 0)
        n = len(user_ids)
        if own is not None:
            flags = pd.DataFrame({"user_id": user_ids, "item_id": own["item_id"].to_numpy()}).merge(
                ctx.hist, on=["user_id", "item_id"], how="left")
            hp = flags["hist_pos"].fillna(False).to_numpy(bool) & known
            hn = flags["hist_neg"].fillna(False).to_numpy(bool) & known
            ih = flags["in_hist"].fillna(False).to_numpy(bool) & known
            opos = np.clip(self.item_index.get_indexer(own["item_id"]), 0, None)
        else:
            hp = hn = ih = np.zeros(n, bool)
            opos = np.zeros(n, np.int64)
        out = []
        own_vec = self.item_matrix[opos]
        if "history_mean" in feats:
            for s, c, flag in ((ctx.pos_sum, ctx.pos_cnt, hp), (ctx.neg_sum, ctx.neg_cnt, hn)):
                total = np.where(known[:, None], s[u], 0) - own_vec * flag[:, None]
                count = np.where(known, c[u], 0) - flag
                out.append(total / np.maximum(count, 1)[:, None])
        if "last5_concat" in feats:
            last = np.where(known[:, None], ctx.last[u], -1)
            drop = (last == opos[:, None]) & ih[:, None]
            order = np.argsort(drop, axis=1, kind="stable")[:, :LAST_N]
            sel = np.take_along_axis(last, order, axis=1)
            vecs = np.where((sel >= 0)[..., None], self.item_matrix[np.clip(sel, 0, None)], 0.0)
            out.append(vecs.reshape(n, -1))
        if "cluster_distribution" in feats:
            counts = np.where(known[:, None], ctx.clusters[u], 0.0)
            counts[np.arange(n), self.item_cluster[opos]] -= ih
            out.append(counts / np.maximum(counts.sum(1, keepdims=True), 1.0))
        if "user_stats" in feats:
            out.append(_normalise(self._user_stat_raw(ctx, user_ids), self.norms["user"]))
        return np.concatenate(out, axis=1).astype(np.float32) if out else np.zeros((n, 0), np.float32)

    def _user_stat_raw(self, ctx: Context, user_ids: np.ndarray) -> np.ndarray:
        uidx = ctx.users.get_indexer(user_ids)
        raw = np.where((uidx >= 0)[:, None], ctx.user_stats[np.clip(uidx, 0, None)], 0.0)
        n, pos, comp, lw = raw.T
        return np.stack([np.log1p(n), (pos + 1) / (n + 2), comp / np.maximum(n, 1), lw / np.maximum(n, 1)], 1)

    # -- item tower input --
    def item_x(self, ctx: Context, item_ids: np.ndarray) -> np.ndarray:
        pos = self.item_index.get_indexer(item_ids)
        if (pos < 0).any():
            raise ValueError(f"{int((pos < 0).sum())} item id(s) are not in the catalogue, e.g. {item_ids[pos < 0][0]}")
        parts = [self.item_matrix[pos]]
        if self.cfg.item_features:
            parts.append(_normalise(self._item_stat_raw(ctx, item_ids), self.norms["item"]))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _item_stat_raw(self, ctx: Context, item_ids: np.ndarray) -> np.ndarray:
        pos = self.item_index.get_indexer(item_ids)
        out = []
        if "item_stats" in self.cfg.item_features:
            out.append(_rates(ctx.item_stats[np.clip(pos, 0, None)]))
        if "creator_stats" in self.cfg.item_features:
            creators = self.creator_ids[np.clip(pos, 0, None)]
            cs = ctx.creator_stats.reindex(creators, fill_value=0).to_numpy(np.float32)
            out.append(_rates(cs))
        return np.concatenate(out, axis=1) if out else np.zeros((len(item_ids), 0), np.float32)

    def id_index(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embedding rows for item and creator ids (0 = unseen in training)."""
        rows = np.clip(self.item_index.get_indexer(item_ids), 0, None)
        return _vocab_index(self.item_vocab, item_ids), _vocab_index(self.creator_vocab, self.creator_ids[rows])

    def state(self) -> dict[str, Any]:
        return {"cfg": self.cfg.model_dump(), "centroids": self.centroids, "norms": self.norms,
                "item_vocab": self.item_vocab, "creator_vocab": self.creator_vocab}

    @classmethod
    def from_state(cls, state: dict[str, Any], item_ids: np.ndarray, item_matrix: np.ndarray,
                   creator_ids: np.ndarray) -> FeatureSpace:
        return cls(ExperimentConfig.model_validate(state["cfg"]), item_ids, item_matrix, creator_ids,
                   state["centroids"], state["norms"], state["item_vocab"], state["creator_vocab"])


def _nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.concatenate([((x[i:i + 4096, None] - centroids[None]) ** 2).sum(-1).argmin(1)
                           for i in range(0, len(x), 4096)])


def _rates(s: np.ndarray) -> np.ndarray:
    n, pos, comp = np.maximum(s[:, 0], 0), np.maximum(s[:, 1], 0), np.maximum(s[:, 2], 0)
    return np.stack([np.log1p(n), (pos + 1) / (n + 2), comp / np.maximum(n, 1)], 1)


def _moments(x: np.ndarray) -> np.ndarray:
    """Mean and std (floored, so a near-constant feature is not blown up at serving time)."""
    if not len(x):
        return np.stack([np.zeros(x.shape[1]), np.ones(x.shape[1])]).astype(np.float32)
    return np.stack([x.mean(0), np.maximum(x.std(0), 1e-2)]).astype(np.float32)


def _normalise(x: np.ndarray, moments: np.ndarray) -> np.ndarray:
    return (x - moments[0]) / moments[1]


def _vocab_index(vocab: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if len(vocab) == 0:
        return np.zeros(len(ids), np.int64)
    pos = np.searchsorted(vocab, ids)
    hit = (pos < len(vocab)) & (vocab[np.clip(pos, 0, len(vocab) - 1)] == ids)
    return np.where(hit, pos + 1, 0).astype(np.int64)


# ----- training examples ------------------------------------------------------------------------------

@dataclass
class Prepared:
    """Everything training and evaluation need."""

    space: FeatureSpace
    ctx: Context
    train_user_x: np.ndarray
    train_item_x: np.ndarray
    train_item_id: np.ndarray
    train_creator_id: np.ndarray
    train_item_ids: np.ndarray
    y: np.ndarray
    w: np.ndarray
    valid: pd.DataFrame  # impressions: user_id, item_id, label
    seen: pd.DataFrame  # training interactions of evaluated users (excluded from full-catalogue ranking)
    candidates: np.ndarray  # full-catalogue retrieval candidates (filtered training items)
    counts: dict[str, int]


def filter_interactions(train: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """Item filter (min interactions) then client filter (count range, >=1 positive and >=1 negative)."""
    items = train.groupby("item_id")["user_id"].transform("size")
    kept = train[items >= cfg.min_item_interactions]
    per_user = kept.groupby("user_id")["label"].agg(["size", "sum"])
    ok = ((per_user["size"] >= cfg.min_user_interactions) & (per_user["size"] <= cfg.max_interactions_in_window)
          & (per_user["sum"] >= 1) & (per_user["sum"] < per_user["size"]))
    return kept[kept["user_id"].isin(per_user.index[ok])].reset_index(drop=True)


def sample_weights(frame: pd.DataFrame, cfg: ExperimentConfig, weights: InteractionWeights) -> np.ndarray:
    """Per-example weight; negatives always weigh 1."""
    label = frame["label"].to_numpy() == 1
    if cfg.sample_weight == "none":
        return np.ones(len(frame), np.float32)
    if cfg.sample_weight == "watch_time":
        w = np.clip(np.sqrt(frame["watch_time_s"].to_numpy(float)), 1.0, 8.0)
    else:
        full = frame["completion"].to_numpy(float) > weights.full_watch_completion
        code = full * 4 + frame["liked"].to_numpy(bool) * 2 + frame["shared"].to_numpy(bool)
        w = weight_table(weights)[code]
    return np.where(label, w, 1.0).astype(np.float32)


def sample_examples(kept: pd.DataFrame, cfg: ExperimentConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Keep every positive; draw observed negatives to hit the pos:neg ratio, topping up with unseen items."""
    pos_w, neg_w = RATIOS[cfg.pos_neg_ratio]
    pos = kept[kept["label"] == 1]
    neg = kept[kept["label"] == 0]
    target = int(round(len(pos) * neg_w / pos_w))
    if len(neg) > target:
        neg = neg.iloc[np.sort(rng.choice(len(neg), target, replace=False))]
    frames = [pos.assign(observed=1), neg.assign(observed=1)]
    short = target - len(neg)
    if short > 0:
        items = np.unique(kept["item_id"].to_numpy())
        users = pos["user_id"].to_numpy()[rng.integers(0, len(pos), short * 2)]
        draws = pd.DataFrame({"user_id": users, "item_id": items[rng.integers(0, len(items), short * 2)]})
        seen = draws.merge(kept[["user_id", "item_id"]].assign(seen=True), on=["user_id", "item_id"], how="left")
        draws = draws[seen["seen"].isna().to_numpy()].drop_duplicates().head(short)
        frames.append(draws.assign(label=0, completion=0.0, watch_time_s=0.0, liked=False, shared=False, observed=0))
    out = pd.concat(frames, ignore_index=True)
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def prepare(inter: Interactions, cfg: ExperimentConfig, weights: InteractionWeights | None = None) -> Prepared:
    """Filters, examples, features and validation impressions for one experiment."""
    weights = weights or InteractionWeights()
    rng = np.random.default_rng(cfg.seed)
    known = inter.train["item_id"].isin(inter.item_ids)
    kept = filter_interactions(inter.train[known], cfg)
    if kept.empty or kept["label"].sum() == 0:
        raise ValueError(f"experiment {cfg.name}: no training interactions left after filters "
                         f"(window {inter.info.get('train_start')}..{inter.info.get('train_end')}, "
                         f"{len(inter.train)} interactions, label rule {cfg.label_rule!r})")
    space = FeatureSpace.fit(cfg, inter, kept)
    ctx = space.context(inter.train)
    ex = sample_examples(kept, cfg, rng)
    users = ex["user_id"].to_numpy()
    items = ex["item_id"].to_numpy()
    item_idx, creator_idx = space.id_index(items)
    kept_users = kept["user_id"].unique()
    valid = inter.valid[inter.valid["user_id"].isin(kept_users) & inter.valid["item_id"].isin(inter.item_ids)]
    valid = valid[["user_id", "item_id", "label"]].sort_values(["user_id", "item_id"]).reset_index(drop=True)
    seen = inter.train[inter.train["user_id"].isin(valid["user_id"].unique())][["user_id", "item_id"]]
    counts = {"train_interactions": len(inter.train), "kept_interactions": len(kept),
              "train_users": int(len(kept_users)), "train_items": int(kept["item_id"].nunique()),
              "examples": len(ex), "positives": int(ex["label"].sum()),
              "valid_users": int(valid["user_id"].nunique()), "valid_rows": len(valid)}
    return Prepared(space, ctx, space.user_x(ctx, users, ex), space.item_x(ctx, items), item_idx, creator_idx,
                    items, ex["label"].to_numpy(np.float32), sample_weights(ex, cfg, weights), valid,
                    seen, np.unique(kept["item_id"].to_numpy()), counts)
