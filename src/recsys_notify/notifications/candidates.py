"""Candidate sources: global-medoid neighbours of a user's seeds, and the fallbacks.

Retrieval is done once per distinct (seed item, language) and shared by every user with that
seed, so the per-user work is only an expansion of precomputed lists:

* ``global_medoid`` / ``cluster_member`` / ``short_term``: a seed's ``k_neighbours`` nearest global
  clusters (faiss inner product on normalised vectors) -> each cluster's representatives and its
  most popular members in the user's language; similarity = seed-to-cluster cosine.
* fallbacks for users left with too few candidates, in two stages: first ``cluster_alternate`` (the
  most popular items of the same nearest clusters beyond their medoids and top members: every item
  with a vector belongs to its nearest cluster), then ``more_global_medoids`` (cluster ranks
  ``k_neighbours..more_neighbours``), ``cold_start`` (newest items nearest the seed) and ``popular``.
* ``creator`` (only with ``creator_affinity``): the most popular items of the user's dominant creator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import faiss
import numpy as np
import pandas as pd

from recsys_notify.core.config import NotificationSettings
from recsys_notify.notifications.arrays import Arrays

SOURCES = ("global_medoid", "cluster_member", "short_term", "more_global_medoids", "cold_start", "popular",
           "cluster_alternate", "creator")
FALLBACKS = ("cluster_alternate", "more_global_medoids", "cold_start", "popular")
SRC = {name: np.int8(i) for i, name in enumerate(SOURCES)}
LIST_BLOCK = 16_384  # queries per block of CandidateIndex.lists


@dataclass
class Rows:
    """Candidate rows of one shard: one per (user, item, seed) edge."""

    user: np.ndarray
    item: np.ndarray
    sim: np.ndarray  # similarity that retrieved it (seed weight applied), 0 for popular without seeds
    seed: np.ndarray  # seed item position, -1 when none
    cluster: np.ndarray  # global cluster position, -1 when unknown
    source: np.ndarray  # int8 code into SOURCES

    def take(self, idx: np.ndarray) -> Rows:
        return Rows(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Rows)))

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Lists:
    """Top ``P`` candidates per query row (a distinct seed item in a language slot); item -1 pads."""

    item: np.ndarray
    sim: np.ndarray
    cluster: np.ndarray
    is_rep: np.ndarray


class CandidateIndex:
    """Faiss index over global cluster vectors plus per-cluster item lists by language."""

    def __init__(self, inputs: Arrays, cfg: NotificationSettings):
        self.inputs, self.cfg = inputs, cfg
        cat = inputs.catalogue
        self.any_slot = len(cat.languages)  # language slot used by users without a language
        self.index = faiss.IndexFlatIP(inputs.cluster_vectors.shape[1])
        self.index.add(inputs.cluster_vectors)
        self.k_all = min(max(cfg.k_neighbours, cfg.more_neighbours), len(inputs.cluster_ids))
        self.items, self.is_rep = self._cluster_items()
        self.item_prior = self._priors(self.items)
        self.alternates = self._alternates()
        self.popular = self._popular()
        self.creators, self.creator_items = self._creator_items()

    def _cluster_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(clusters, language slots + any, m) item positions: representatives and top members by prior."""
        inp, m = self.inputs, self.cfg.items_per_cluster
        cat = inp.catalogue
        table = pd.concat([inp.cluster_reps.assign(rep=True), inp.members.assign(rep=False)])
        table = table.drop_duplicates(["cluster_pos", "item_pos"])
        table = table[inp.allowed[table["item_pos"].to_numpy()]]
        table = table.assign(prior=cat.prior[table["item_pos"].to_numpy()],
                             slot=cat.lang[table["item_pos"].to_numpy()].astype(np.int64))
        both = pd.concat([table, table.assign(slot=self.any_slot)])
        both = both.sort_values(["cluster_pos", "slot", "prior", "item_pos"], ascending=[True, True, False, True])
        both = both.assign(r=both.groupby(["cluster_pos", "slot"]).cumcount())
        both = both[both["r"] < m]
        items = np.full((len(inp.cluster_ids), self.any_slot + 1, m), -1, dtype=np.int64)
        is_rep = np.zeros(items.shape, dtype=bool)
        where = (both["cluster_pos"].to_numpy(), both["slot"].to_numpy(), both["r"].to_numpy())
        items[where] = both["item_pos"].to_numpy()
        is_rep[where] = both["rep"].to_numpy(bool)
        return items, is_rep

    def _priors(self, items: np.ndarray) -> np.ndarray:
        """The prior of each entry of an item table (-inf where it pads), gathered once, not per query."""
        return np.where(items >= 0, self.inputs.catalogue.prior[np.maximum(items, 0)], -np.inf)

    def _alternates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(clusters, language slots + any, A) popular items of each cluster not already in its item lists,
        with their representative flags (none) and priors."""
        inp, a = self.inputs, self.cfg.alternates_per_cluster
        cat = inp.catalogue
        if a == 0:
            return None
        pool = np.flatnonzero(inp.allowed & cat.vectors.any(axis=1))
        cluster = inp.item_cluster[pool]
        todo = cluster < 0
        if todo.any():
            _, nearest = self.index.search(np.ascontiguousarray(cat.vectors[pool[todo]]), 1)
            cluster[todo] = nearest[:, 0]
        table = pd.DataFrame({"cluster_pos": cluster, "item_pos": pool, "pop": cat.pop[pool],
                              "prior": cat.prior[pool], "slot": cat.lang[pool].astype(np.int64)})
        listed = self.items[table["cluster_pos"].to_numpy(), table["slot"].to_numpy()]
        table = table[~(listed == table["item_pos"].to_numpy()[:, None]).any(axis=1)]
        both = pd.concat([table, table.assign(slot=self.any_slot)])
        both = both.sort_values(["cluster_pos", "slot", "pop", "prior", "item_pos"],
                                ascending=[True, True, False, False, True])
        both = both.assign(r=both.groupby(["cluster_pos", "slot"]).cumcount())
        both = both[both["r"] < a]
        items = np.full((len(inp.cluster_ids), self.any_slot + 1, a), -1, dtype=np.int64)
        items[both["cluster_pos"].to_numpy(), both["slot"].to_numpy(), both["r"].to_numpy()] = both["item_pos"]
        return items, np.zeros(items.shape, dtype=bool), self._priors(items)

    def _creator_items(self) -> tuple[np.ndarray, np.ndarray]:
        """Creator ids (sorted) and their ``items_per_cluster`` allowed items of highest prior, -1 padded."""
        cat, m = self.inputs.catalogue, self.cfg.items_per_cluster
        if not self.cfg.creator_affinity:
            return np.zeros(0, np.int64), np.zeros((0, m), np.int64)
        pool = np.flatnonzero(self.inputs.allowed)
        creator = cat.frame["creator_id"].to_numpy(np.int64)[pool]
        order = np.lexsort((pool, -cat.prior[pool], creator))
        pool, creator = pool[order], creator[order]
        ids, first = np.unique(creator, return_index=True)
        rank = np.arange(len(pool)) - np.repeat(first, np.diff(np.append(first, len(pool))))
        out = np.full((len(ids), m), -1, dtype=np.int64)
        keep = rank < m
        out[np.searchsorted(ids, creator[keep]), rank[keep]] = pool[keep]
        return ids, out

    def creator_rows(self, users: np.ndarray, creators: np.ndarray) -> Rows:
        """Every user crossed with their dominant creator's items (users with a creator only)."""
        if not len(self.creators):
            users = users[:0]
        at = np.searchsorted(self.creators, creators[:len(users)]).clip(max=max(len(self.creators) - 1, 0))
        known = self.creators[at] == creators[:len(users)] if len(self.creators) else np.zeros(0, bool)
        rows = popular_rows(users[known], at[known], self.creator_items)
        rows.source[:] = SRC["creator"]
        return rows

    def _popular(self) -> np.ndarray:
        """(language slots + any, popular_k) most positively engaged allowed items, -1 padded."""
        cat, k = self.inputs.catalogue, self.cfg.popular_k
        out = np.full((self.any_slot + 1, k), -1, dtype=np.int64)
        order = np.lexsort((np.arange(len(cat.pop)), -cat.prior, -cat.pop))
        order = order[self.inputs.allowed[order]]
        for slot in range(self.any_slot + 1):
            pick = order if slot == self.any_slot else order[cat.lang[order] == slot]
            out[slot, :min(k, len(pick))] = pick[:k]
        return out

    def slot(self, user_lang: np.ndarray) -> np.ndarray:
        return np.where(user_lang < 0, self.any_slot, user_lang).astype(np.int64)

    def neighbours(self, seed_items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest clusters (positions, similarities) for distinct seed items (sorted)."""
        vec = self.inputs.catalogue.vectors[seed_items]
        sims, idx = self.index.search(np.ascontiguousarray(vec), self.k_all)
        return idx, sims

    def lists(self, seed_pos: np.ndarray, slot: np.ndarray, knn: tuple[np.ndarray, np.ndarray],
              ranks: slice, table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Lists:
        """Candidate lists for (seed, slot) rows from the clusters at ``ranks`` of each seed's neighbours.

        ``table`` is the per-cluster (items, representative flags, priors) to draw from (default:
        representatives and top members). Rows go in blocks: the temporaries of one block are reused
        memory, where whole-shard temporaries are fresh pages the kernel must zero.
        """
        blocks = [self._lists(seed_pos[i:i + LIST_BLOCK], slot[i:i + LIST_BLOCK], knn, ranks, table)
                  for i in range(0, max(len(seed_pos), 1), LIST_BLOCK)]
        return Lists(*(np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(Lists)))

    def _lists(self, seed_pos: np.ndarray, slot: np.ndarray, knn: tuple[np.ndarray, np.ndarray],
               ranks: slice, table: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> Lists:
        cluster_items, cluster_rep, cluster_prior = table if table is not None else (self.items, self.is_rep,
                                                                                     self.item_prior)
        idx, sims = knn
        c = idx[seed_pos, ranks]  # (Q, k')
        s = sims[seed_pos, ranks]
        valid_c = c >= 0
        c = np.where(valid_c, c, 0)
        items = cluster_items[c, slot[:, None]]  # (Q, k', m)
        rep = cluster_rep[c, slot[:, None]]
        items = np.where(valid_c[..., None], items, -1)
        q, k, m = items.shape
        prior = np.where(valid_c[..., None], cluster_prior[c, slot[:, None]], -np.inf).reshape(q, k * m)
        items = items.reshape(q, k * m)
        sim = np.repeat(s, m, axis=1)
        clus = np.repeat(c, m, axis=1)
        rep = rep.reshape(q, k * m)
        score = np.maximum(sim, 1e-3) * prior  # -inf where an entry pads
        p = min(self.cfg.candidates_per_seed, k * m)
        top = np.argpartition(-score, p - 1, axis=1)[:, :p] if p < k * m else np.broadcast_to(np.arange(p), score.shape)
        order = np.argsort(-np.take_along_axis(score, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        take = lambda a: np.take_along_axis(a, top, axis=1)  # noqa: E731
        return Lists(take(items), take(sim).astype(np.float32), take(clus), take(rep))

    def cold_start(self, seed_items: np.ndarray, slot: np.ndarray) -> Lists:
        """Newest items (created within ``cold_start_days``) nearest each (seed, slot), per language."""
        cat, k = self.inputs.catalogue, self.cfg.cold_start_k
        fresh = np.flatnonzero((cat.age_days < self.cfg.cold_start_days) & self.inputs.allowed
                               & cat.vectors.any(axis=1))
        out = Lists(np.full((len(seed_items), k), -1, np.int64), np.zeros((len(seed_items), k), np.float32),
                    np.full((len(seed_items), k), -1, np.int64), np.zeros((len(seed_items), k), bool))
        for s in np.unique(slot):
            pool = fresh if s == self.any_slot else fresh[cat.lang[fresh] == s]
            rows = np.flatnonzero(slot == s)
            if len(pool) == 0 or len(rows) == 0:
                continue
            index = faiss.IndexFlatIP(cat.vectors.shape[1])
            index.add(cat.vectors[pool])
            sims, idx = index.search(np.ascontiguousarray(cat.vectors[seed_items[rows]]), min(k, len(pool)))
            out.item[rows, :idx.shape[1]] = np.where(idx >= 0, pool[np.maximum(idx, 0)], -1)
            out.sim[rows, :idx.shape[1]] = sims
        return out


def expand(user: np.ndarray, seed_item: np.ndarray, weight: np.ndarray, lists: Lists, q: np.ndarray,
           source: np.ndarray) -> Rows:
    """One row per (seed row, list entry); ``source`` has the shape of ``lists.item[q]``."""
    p = lists.item.shape[1]
    item = lists.item[q].ravel()
    keep = item >= 0
    return Rows(np.repeat(user, p)[keep], item[keep],
                (lists.sim[q] * weight[:, None]).ravel()[keep].astype(np.float32),
                np.repeat(seed_item, p)[keep], lists.cluster[q].ravel()[keep], source.ravel()[keep])


def rep_source(lists: Lists, q: np.ndarray, short_term: np.ndarray) -> np.ndarray:
    """Per entry source for long-term lists: representative, member, or short-term seed."""
    src = np.where(lists.is_rep[q], SRC["global_medoid"], SRC["cluster_member"]).astype(np.int8)
    return np.where(short_term[:, None], SRC["short_term"], src)


def popular_rows(users: np.ndarray, slots: np.ndarray, popular: np.ndarray) -> Rows:
    """Every user crossed with the popular list of their language."""
    k = popular.shape[1]
    item = popular[slots].ravel()
    keep = item >= 0
    n = len(item)
    return Rows(np.repeat(users, k)[keep], item[keep], np.zeros(n, np.float32)[keep],
                np.full(n, -1, np.int64)[keep], np.full(n, -1, np.int64)[keep],
                np.full(n, SRC["popular"], np.int8)[keep])
