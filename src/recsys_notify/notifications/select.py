"""Choose one item per eligible user: candidates -> filters -> fallbacks -> ranking, sharded by user.

Users are processed in contiguous shards of ``shard_users`` positions so memory stays bounded;
within a shard everything is vectorised numpy over (user, item) pair keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys_notify.core.config import NotificationSettings
from recsys_notify.notifications.arrays import Arrays, dense_unique
from recsys_notify.notifications.candidates import SRC, CandidateIndex, Rows, expand, popular_rows, rep_source
from recsys_notify.notifications.ranking import best_in_groups, best_per_key, champion_scores, transparent


@dataclass
class Choice:
    """The chosen candidate of each user that got one (arrays aligned by position)."""

    user: np.ndarray
    item: np.ndarray
    score: np.ndarray
    sim: np.ndarray
    seed: np.ndarray
    cluster: np.ndarray
    source: np.ndarray
    candidates: np.ndarray  # distinct candidates left after filtering (incl. fallbacks)


def in_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(sorted_keys, values).clip(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == values


class Selector:
    """Holds the retrieval state shared by all shards of one run."""

    def __init__(self, inputs: Arrays, cfg: NotificationSettings, target: np.ndarray):
        self.inputs, self.cfg, self.target = inputs, cfg, target
        self.ci = CandidateIndex(inputs, cfg)
        self.user_slot = self.ci.slot(inputs.user_lang)
        seeds = inputs.seeds[target[inputs.seeds["user_pos"].to_numpy()]]
        self.s_user = seeds["user_pos"].to_numpy(np.int64)
        self.s_item = seeds["item_pos"].to_numpy(np.int64)
        self.s_weight = seeds["weight"].to_numpy(np.float32)
        self.s_short = (seeds["kind"] == "short_term").to_numpy()
        self.seed_items, seed_pos = dense_unique(self.s_item, inputs.n_items)
        self.knn = self.ci.neighbours(self.seed_items)
        self.n_slots = self.ci.any_slot + 1
        self.q_keys, self.s_q = dense_unique(seed_pos * self.n_slots + self.user_slot[self.s_user],
                                             len(self.seed_items) * self.n_slots)
        self.k = min(cfg.k_neighbours, self.ci.k_all)
        self.main = self.ci.lists(self.q_keys // self.n_slots, self.q_keys % self.n_slots, self.knn, slice(0, self.k))

    def keep(self, rows: Rows) -> np.ndarray:
        """Filters: blocked items, other languages, watched in the window, sent or ignored before."""
        inp = self.inputs
        lang = inp.user_lang[rows.user]
        ok = inp.allowed[rows.item] & ((lang < 0) | (inp.catalogue.lang[rows.item] == lang))
        return ok & ~in_sorted(inp.keys(rows.user, rows.item), inp.excluded)

    def _seed_queries(self, users: np.ndarray, a: int, b: int):
        """The seed rows of ``users``: (seed positions, language slots, row -> query, expand args)."""
        idx = a + np.flatnonzero(in_sorted(self.s_user[a:b], users))
        q_sub, inv = np.unique(self.s_q[idx], return_inverse=True)
        seed_pos, slot = self.q_keys[q_sub] // self.n_slots, self.q_keys[q_sub] % self.n_slots
        return seed_pos, slot, inv, (self.s_user[idx], self.s_item[idx], self.s_weight[idx])

    def _alternates(self, users: np.ndarray, a: int, b: int) -> Rows:
        """First fallback: popular alternates of the same nearest clusters, for ``users``."""
        seed_pos, slot, inv, args = self._seed_queries(users, a, b)
        alt = self.ci.lists(seed_pos, slot, self.knn, slice(0, self.k), table=self.ci.alternates)
        return expand(*args, alt, inv, np.full(alt.item[inv].shape, SRC["cluster_alternate"]))

    def _fallback(self, users: np.ndarray, a: int, b: int) -> list[Rows]:
        """More global medoids, cold-start items near the seeds, and popular items for ``users``."""
        seed_pos, slot, inv, args = self._seed_queries(users, a, b)
        parts = []
        if len(inv):
            if self.ci.k_all > self.k:
                more = self.ci.lists(seed_pos, slot, self.knn, slice(self.k, self.ci.k_all))
                parts.append(expand(*args, more, inv, np.full(more.item[inv].shape, SRC["more_global_medoids"])))
            cold = self.ci.cold_start(self.seed_items[seed_pos], slot)
            parts.append(expand(*args, cold, inv, np.full(cold.item[inv].shape, SRC["cold_start"])))
        pop = popular_rows(users, self.user_slot[users], self.ci.popular)
        pop.sim = self._affinity(pop, a, b)
        parts.append(pop)
        return parts

    def _affinity(self, rows: Rows, a: int, b: int) -> np.ndarray:
        """Best seed-weighted cosine between each row's item and its user's seeds (0 without seeds)."""
        s_user = self.s_user[a:b]
        start = np.searchsorted(s_user, rows.user, "left")
        count = np.searchsorted(s_user, rows.user, "right") - start
        row_of = np.repeat(np.arange(len(rows)), count)
        seed_at = a + np.repeat(start, count) + np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        vec = self.inputs.catalogue.vectors
        dots = np.einsum("ij,ij->i", vec[rows.item[row_of]], vec[self.s_item[seed_at]]) * self.s_weight[seed_at]
        best = np.zeros(len(rows), dtype=np.float32)
        np.maximum.at(best, row_of, dots.astype(np.float32))
        return best

    def shard(self, lo: int, hi: int, ranker: Any) -> Choice:
        inp = self.inputs
        a, b = np.searchsorted(self.s_user, [lo, hi])
        q = self.s_q[a:b]
        rows = expand(self.s_user[a:b], self.s_item[a:b], self.s_weight[a:b], self.main, q,
                      rep_source(self.main, q, self.s_short[a:b]))
        if self.cfg.creator_affinity and inp.user_creator is not None:
            users = lo + np.flatnonzero(self.target[lo:hi] & (inp.user_creator[lo:hi] >= 0))
            creator = self.ci.creator_rows(users, inp.user_creator[users])
            creator.sim = self._affinity(creator, a, b)
            rows = Rows.concat([rows, creator])
        rows = self._dedupe_and_filter(rows)
        count = np.bincount(rows.user - lo, minlength=hi - lo)
        short = lo + np.flatnonzero(self.target[lo:hi] & (count < self.cfg.min_candidates))
        if len(short) and self.ci.alternates is not None:  # the same clusters' next-best items come first
            rows = self._refill(rows, short, self._alternates(short, a, b))
            count = np.bincount(rows.user - lo, minlength=hi - lo)
            short = lo + np.flatnonzero(self.target[lo:hi] & (count < self.cfg.min_candidates))
        if len(short):
            rows = self._refill(rows, short, Rows.concat(self._fallback(short, a, b)))
            count = np.bincount(rows.user - lo, minlength=hi - lo)
        score = self._score(rows)
        if ranker is not None and len(rows):
            score = champion_scores(ranker, inp.user_ids[rows.user], inp.catalogue.item_ids[rows.item])
        best = best_in_groups(rows.user, score)  # rows are in (user, item) order: ties go to the smaller item
        chosen = rows.take(best)
        return Choice(chosen.user, chosen.item, score[best], chosen.sim, chosen.seed, chosen.cluster,
                      chosen.source, count[chosen.user - lo])

    def _dedupe_and_filter(self, rows: Rows) -> Rows:
        """Best edge per (user, item), in (user, item) order (sorted keys also make the filter lookups fast)."""
        rows = rows.take(best_per_key(self.inputs.keys(rows.user, rows.item), self._score(rows)))
        return rows.take(np.flatnonzero(self.keep(rows)))

    def _refill(self, rows: Rows, users: np.ndarray, extra: Rows) -> Rows:
        """Add fallback rows of ``users`` (sorted) to deduplicated ``rows``: only those users' rows are redone.

        Their old rows stay ahead of the new ones, so ties are broken as if every row were redone.
        """
        mine = in_sorted(rows.user, users)
        merged = Rows.concat([rows.take(np.flatnonzero(~mine)),
                              self._dedupe_and_filter(Rows.concat([rows.take(np.flatnonzero(mine)), extra]))])
        return merged.take(np.argsort(self.inputs.keys(merged.user, merged.item), kind="stable"))

    def _score(self, rows: Rows) -> np.ndarray:
        score = transparent(rows.sim, self.inputs.catalogue.prior[rows.item])
        if self.cfg.creator_affinity and self.inputs.user_creator is not None:
            score = score * np.where(self.boosted(rows.user, rows.item), 1.0 + self.cfg.creator_boost, 1.0)
        return score

    def boosted(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Whether each (user, item) is by the user's dominant creator."""
        inp = self.inputs
        creator = inp.catalogue.frame["creator_id"].to_numpy(np.int64)
        return (inp.user_creator[user] >= 0) & (creator[item] == inp.user_creator[user])


def choose(inputs: Arrays, cfg: NotificationSettings, target: np.ndarray,
           ranker: Any) -> tuple[Choice, CandidateIndex]:
    """Run every shard and concatenate the per-user choices (ascending user position)."""
    selector = Selector(inputs, cfg, target)
    n = len(inputs.user_ids)
    parts = [selector.shard(lo, min(lo + cfg.shard_users, n), ranker)
             for lo in range(0, n, cfg.shard_users)]
    if not parts:
        parts = [selector.shard(0, 0, ranker)]
    choice = Choice(*(np.concatenate([getattr(p, f) for p in parts]) for f in Choice.__dataclass_fields__))
    return choice, selector.ci
