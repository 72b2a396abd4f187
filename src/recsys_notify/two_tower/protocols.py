"""Standard full-ranking evaluation protocols, so our figures compare with papers and libraries.

Splits (train / valid / test kept apart; every interaction is an implicit positive):

* ``random``: per user, a seeded shuffle split 8:1:1 with RecBole's rounding (``RS`` ordering);
* ``leave_last_out``: per user by time, the last interaction is test, the one before valid;
* ``global_time``: all interactions by time, the first 80 % train, the next 10 % valid, the last 10 %
  test (what daily retraining sees: the future is unknown).

Ranking is over the whole catalogue (every item id given, interacted or not), excluding the user's
train items (and valid items on test); ties go to the lower item id. Metrics: NDCG@K (binary gain,
ideal DCG over min(K, #relevant)), Recall@K (hits / #relevant), MRR@10, Hit@10, Precision@10, item
coverage@10 (distinct items in all top-10s / catalogue) and intra-list diversity@10.
Nothing is removed silently: duplicates, users too short to split, cold users/items of the time split
and users skipped at evaluation are counted in ``Split.report`` and the metrics dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_notify.two_tower.metrics import check_finite, intra_list_diversity

PROTOCOLS = ("random", "leave_last_out", "global_time")
KS = (10, 20)
Scorer = Callable[[np.ndarray], np.ndarray]  # user indices -> (users, catalogue) scores, higher is better


@dataclass
class Split:
    """Binary (users x catalogue) matrices per stage, with the ids behind rows/columns and the counts."""

    protocol: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    report: dict[str, int] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape


def make_split(interactions: pd.DataFrame, item_ids: np.ndarray, protocol: str, seed: int = 0,
               ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """Split ``interactions`` (user_id, item_id, ts) over the catalogue ``item_ids``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    catalogue = pd.Index(np.unique(np.asarray(item_ids)))
    report: dict[str, int] = {"interactions": len(interactions)}
    known = catalogue.get_indexer(interactions["item_id"]) >= 0
    report["dropped_unknown_item_interactions"] = int((~known).sum())
    frame = interactions[known].sort_values(["ts", "user_id", "item_id"], kind="stable")
    dedup = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    report["dropped_duplicate_interactions"] = len(frame) - len(dedup)
    frame = dedup.reset_index(drop=True)
    if protocol == "random":
        stage = _random_stages(frame, seed, ratios)
    elif protocol == "leave_last_out":
        stage = _leave_last_out_stages(frame)
    else:
        stage = _global_time_stages(frame, ratios)
    users = pd.Index(np.unique(frame["user_id"].to_numpy()))
    rows, cols = users.get_indexer(frame["user_id"]), catalogue.get_indexer(frame["item_id"])

    def matrix(s: int) -> sp.csr_matrix:
        m = stage == s
        return sp.csr_matrix((np.ones(int(m.sum()), np.float32), (rows[m], cols[m])),
                             shape=(len(users), len(catalogue)))

    train, valid, test = matrix(0), matrix(1), matrix(2)
    n_train = np.diff(train.indptr)
    report |= {"users": len(users), "items": len(catalogue),
               "train_interactions": train.nnz, "valid_interactions": valid.nnz, "test_interactions": test.nnz,
               "users_without_train": int((n_train == 0).sum()),
               "items_without_train": int((np.diff(train.tocsc().indptr) == 0).sum())}
    if protocol == "leave_last_out":
        report["users_too_short_all_train"] = int((frame.groupby("user_id").size() < 3).sum())
    if protocol == "global_time":
        cold_items = np.diff(train.tocsc().indptr) == 0
        for name, m in (("valid", valid), ("test", test)):
            cold_users = (np.diff(m.indptr) > 0) & (n_train == 0)
            report[f"{name}_cold_users"] = int(cold_users.sum())
            report[f"{name}_cold_user_interactions"] = int(np.diff(m.indptr)[cold_users].sum())
            report[f"{name}_cold_item_interactions"] = int(cold_items[m.indices].sum())
    return Split(protocol, users.to_numpy(), catalogue.to_numpy(), train, valid, test, report)


def _random_stages(frame: pd.DataFrame, seed: int, ratios: tuple[float, float, float]) -> np.ndarray:
    """Per user: shuffle, then RecBole's ``split_by_ratio`` counts (int(r * n) for valid/test, at least one
    each while train keeps more than one)."""
    rng = np.random.default_rng(seed)
    stage = np.zeros(len(frame), np.int8)
    for idx in frame.groupby("user_id", sort=True).indices.values():
        idx = rng.permutation(idx)
        n = len(idx)
        cnt = [0, int(ratios[1] * n), int(ratios[2] * n)]
        cnt[0] = n - cnt[1] - cnt[2]
        for i in (2, 1):
            if cnt[0] <= 1:
                break
            if 0 < ratios[i] * n < 1:
                cnt[i] += 1
                cnt[0] -= 1
        stage[idx[cnt[0]:cnt[0] + cnt[1]]] = 1
        stage[idx[cnt[0] + cnt[1]:]] = 2
    return stage


def _leave_last_out_stages(frame: pd.DataFrame) -> np.ndarray:
    """Frame is sorted by time: per user the last is test, the one before valid (users with < 3 keep all)."""
    n = frame.groupby("user_id")["item_id"].transform("size").to_numpy()
    rank = frame.groupby("user_id").cumcount().to_numpy()
    stage = np.zeros(len(frame), np.int8)
    long = n >= 3
    stage[long & (rank == n - 2)] = 1
    stage[long & (rank == n - 1)] = 2
    return stage


def _global_time_stages(frame: pd.DataFrame, ratios: tuple[float, float, float]) -> np.ndarray:
    """Frame is sorted by (ts, user, item): cut at the 80 % and 90 % positions."""
    n = len(frame)
    a = int(round(ratios[0] * n))
    b = int(round((ratios[0] + ratios[1]) * n))
    stage = np.zeros(n, np.int8)
    stage[a:b] = 1
    stage[b:] = 2
    return stage


def top_k_items(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k column indices per row by descending score; ties go to the lower column (= lower item id)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def evaluate(scorer: Scorer, split: Split, stage: str = "test", ks: tuple[int, ...] = KS,
             item_vectors: np.ndarray | None = None, model: str = "model", batch: int = 512
             ) -> dict[str, float]:
    """Full-catalogue metrics of ``scorer`` on ``stage`` (``valid`` or ``test``) of ``split``.

    Evaluated users have at least one relevant item in the stage and at least one train item; the others
    are counted (``skipped_no_relevant``, ``skipped_cold_user``). Non-finite scores raise
    :class:`~recsys_notify.two_tower.metrics.NonFiniteScoresError` naming ``model``.
    """
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', not {stage!r}")
    target = split.valid if stage == "valid" else split.test
    exclude = split.train if stage == "valid" else (split.train + split.valid).tocsr()
    n_rel, n_train = np.diff(target.indptr), np.diff(split.train.indptr)
    users = np.flatnonzero((n_rel > 0) & (n_train > 0))
    kmax = max(*ks, 10)
    hits_rows, tops = [], []
    for start in range(0, len(users), batch):
        u = users[start:start + batch]
        scores = np.asarray(scorer(u), dtype=np.float64)
        if scores.shape != (len(u), split.shape[1]):
            raise ValueError(f"{model}: scores have shape {scores.shape}, expected {(len(u), split.shape[1])}")
        check_finite(scores, model)
        ex = exclude[u].tocoo()
        scores[ex.row, ex.col] = -np.inf
        top = top_k_items(scores, kmax)
        hits_rows.append(np.take_along_axis(target[u].toarray() > 0, top, axis=1))
        tops.append(top)
    hits = np.concatenate(hits_rows) if hits_rows else np.zeros((0, kmax), bool)
    top = np.concatenate(tops) if tops else np.zeros((0, kmax), np.int64)
    rel = n_rel[users].astype(float)
    discount = 1.0 / np.log2(np.arange(kmax) + 2)
    out: dict[str, float] = {}
    for k in ks:
        h = hits[:, :k]
        ideal = np.cumsum(discount[:k])[np.minimum(rel, k).astype(int) - 1]
        out[f"ndcg_{k}"] = _mean((h * discount[:k]).sum(1) / ideal)
        out[f"recall_{k}"] = _mean(h.sum(1) / rel)
    h10 = hits[:, :10]
    first = np.where(h10.any(1), h10.argmax(1) + 1, np.inf)
    out["mrr_10"] = _mean(1.0 / first)
    out["hit_10"] = _mean(h10.any(1))
    out["precision_10"] = _mean(h10.mean(1))
    out["coverage_10"] = float(len(np.unique(top[:, :10])) / split.shape[1])
    if item_vectors is not None and len(top):
        out["intra_list_diversity_10"] = intra_list_diversity(top[:, :10], item_vectors)
    out["evaluated_users"] = len(users)
    out["skipped_no_relevant"] = int((n_rel == 0).sum())
    out["skipped_cold_user"] = int(((n_rel > 0) & (n_train == 0)).sum())
    return out


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
