"""Ranking metrics, with the per-impression ones computed exactly as MIND's ``evaluate.py``.

Impression metrics (one impression = one user's validation-day items with 0/1 labels):

* AUC: as ``sklearn.metrics.roc_auc_score`` (tied scores get half credit);
* MRR: sum over positives of 1/rank divided by the number of positives;
* NDCG@k: DCG with gain ``2**y - 1`` and discount ``log2(rank + 1)``, divided by the ideal DCG;
* MAP: as ``sklearn.metrics.average_precision_score`` per impression (tied scores form one threshold);
* CUST-MAP@10: sum over the top 10 of precision@k at each hit, divided by ``min(10, #relevant)``.

AUC and AP are computed in closed form (rank statistic / step-wise precision-recall sum) because the
sklearn calls cost ~10 ms each in argument validation; tests check both against sklearn, ties included.

All are plain means over impressions. Impressions without a positive are skipped and counted
(``skipped_no_positive``); impressions without a negative have no AUC and are counted
(``auc_skipped_no_negative``) but keep their ranking metrics.

Ties: MIND sorts with ``np.argsort(score)[::-1]``, whose order among equal scores is unspecified.
Here every ranking uses a stable descending sort, so equal scores keep their input order; the
evaluators sort each impression (and the catalogue) by ascending item id first, so **ties go to the
lower item id**. A model that returns a constant score therefore ranks by item id, not by label.
``ties="mind"`` instead sorts exactly as MIND's ``evaluate.py`` (``np.argsort(score)[::-1]``: among
equal scores, in practice the higher index first), for figures comparable with MIND's scorer.

Scores must be finite: NaN or inf raise :class:`NonFiniteScoresError` naming the model and the count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import rankdata

IMPRESSION_METRICS = ("auc", "mrr", "ndcg_5", "ndcg_10", "map", "cust_map_10")
TIES = ("lower", "mind")


class NonFiniteScoresError(ValueError):
    """A model returned NaN or infinite scores: ranking them would silently miscount the impression."""


def check_finite(scores: np.ndarray, model: str = "model") -> None:
    """Raise :class:`NonFiniteScoresError` naming ``model`` and how many scores are NaN / inf."""
    scores = np.asarray(scores, dtype=float)
    bad = ~np.isfinite(scores)
    if bad.any():
        n_nan = int(np.isnan(scores).sum())
        raise NonFiniteScoresError(f"{model} returned {int(bad.sum())} non-finite score(s) of {scores.size} "
                                   f"({n_nan} NaN, {int(bad.sum()) - n_nan} inf)")


def rank_order(y_score: np.ndarray, ties: str = "lower") -> np.ndarray:
    """Indices by descending score; ties keep input order (``"lower"``) or follow MIND (``"mind"``)."""
    if ties == "mind":
        return np.argsort(np.asarray(y_score, dtype=float))[::-1]
    if ties != "lower":
        raise ValueError(f"ties must be one of {', '.join(TIES)}, not {ties!r}")
    return np.argsort(-np.asarray(y_score, dtype=float), kind="stable")


def dcg_score(y_true: np.ndarray, y_score: np.ndarray, k: int = 10, ties: str = "lower") -> float:
    y = np.take(y_true, rank_order(y_score, ties)[:k])
    gains = 2.0 ** y - 1
    discounts = np.log2(np.arange(len(y)) + 2)
    return float(np.sum(gains / discounts))


def ndcg_score(y_true: np.ndarray, y_score: np.ndarray, k: int = 10, ties: str = "lower") -> float:
    best = dcg_score(y_true, y_true, k, ties)
    return dcg_score(y_true, y_score, k, ties) / best


def mrr_score(y_true: np.ndarray, y_score: np.ndarray, ties: str = "lower") -> float:
    y = np.take(y_true, rank_order(y_score, ties))
    return float(np.sum(y / (np.arange(len(y)) + 1)) / np.sum(y))


def ap_at_k(y_true: np.ndarray, y_score: np.ndarray, k: int = 10, ties: str = "lower") -> float:
    """CUST-MAP@k for one impression: precision at each hit in the top k over min(k, #relevant)."""
    y = np.take(y_true, rank_order(y_score, ties)[:k]).astype(float)
    precision = np.cumsum(y) / (np.arange(len(y)) + 1)
    return float(np.sum(precision * y) / min(k, int(np.sum(y_true))))


def auc_score(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """ROC AUC = Mann-Whitney U / (n_pos * n_neg) with average ranks for ties (equals roc_auc_score)."""
    y = np.asarray(y_true) == 1
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    ranks = rankdata(y_score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """sum_n (R_n - R_{n-1}) P_n over distinct score thresholds (equals average_precision_score)."""
    order = np.argsort(-np.asarray(y_score, dtype=float), kind="stable")
    s, y = np.asarray(y_score, dtype=float)[order], np.asarray(y_true, dtype=float)[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def impression_metrics(y_true: np.ndarray, y_score: np.ndarray, ties: str = "lower") -> dict[str, float]:
    """All per-impression metrics of one impression with at least one positive (AUC is NaN without a negative)."""
    y_true = np.asarray(y_true, dtype=int)
    y_score = np.asarray(y_score, dtype=float)
    both = 0 < y_true.sum() < len(y_true)
    return {"auc": auc_score(y_true, y_score) if both else float("nan"),
            "mrr": mrr_score(y_true, y_score, ties), "ndcg_5": ndcg_score(y_true, y_score, 5, ties),
            "ndcg_10": ndcg_score(y_true, y_score, 10, ties),
            "map": average_precision(y_true, y_score), "cust_map_10": ap_at_k(y_true, y_score, 10, ties)}


def evaluate_impressions(frame: pd.DataFrame, score_col: str = "score", model: str = "model",
                         ties: str = "lower") -> dict[str, float]:
    """Mean impression metrics over users of ``frame`` (user_id, item_id, label, score)."""
    check_finite(frame[score_col].to_numpy(), model)
    frame = frame.sort_values(["user_id", "item_id"], kind="stable")
    rows: list[dict[str, float]] = []
    skipped = 0
    for _, g in frame.groupby("user_id", sort=True):
        y = g["label"].to_numpy(int)
        if y.sum() == 0:
            skipped += 1
            continue
        rows.append(impression_metrics(y, g[score_col].to_numpy(float), ties))
    out: dict[str, float] = {}
    for name in IMPRESSION_METRICS:
        values = np.array([r[name] for r in rows], dtype=float)
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if len(values) else float("nan")
    out["impressions"] = len(rows)
    out["skipped_no_positive"] = skipped
    out["auc_skipped_no_negative"] = int(sum(np.isnan(r["auc"]) for r in rows))
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Top-k column indices per row by descending score, ties to the lower column (columns sorted by item id)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
        np.tile(np.arange(scores.shape[1]), (len(scores), 1))
    # argpartition is not stable: re-rank the candidate set plus everything tied with its k-th score
    out = np.empty((len(scores), k), np.int64)
    for i, row in enumerate(scores):
        kth = row[part[i]].min()
        cand = np.flatnonzero(row >= kth)
        out[i] = cand[rank_order(row[cand])[:k]]
    return out


def retrieval_metrics(scores: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray,
                      relevant: pd.DataFrame, seen: pd.DataFrame, item_vectors: np.ndarray | None = None,
                      ks: tuple[int, ...] = (10, 50), model: str = "model") -> dict[str, float]:
    """Full-catalogue metrics: ``scores`` is (users, catalogue) with ``item_ids`` ascending.

    Items a user already interacted with in training (``seen``) are excluded. Recall@K = hits / #relevant;
    NDCG@K uses binary gains with the ideal DCG over min(K, #relevant). Users without a relevant
    catalogue item are skipped and counted.
    """
    if not np.all(np.diff(item_ids) > 0):
        raise ValueError("item_ids must be strictly ascending (tie-breaking by item id)")
    check_finite(scores, model)
    scores = scores.astype(np.float64, copy=True)
    uindex, iindex = pd.Index(user_ids), pd.Index(item_ids)
    s = seen[seen["user_id"].isin(uindex) & seen["item_id"].isin(iindex)]
    scores[uindex.get_indexer(s["user_id"]), iindex.get_indexer(s["item_id"])] = -np.inf
    rel = relevant[relevant["user_id"].isin(uindex) & relevant["item_id"].isin(iindex)]
    rel_sets = rel.groupby("user_id")["item_id"].apply(lambda x: set(iindex.get_indexer(x))).to_dict()
    kmax = max(max(ks), 10)
    top = top_k(scores, kmax)
    out: dict[str, float] = {}
    evaluated = [i for i, u in enumerate(user_ids) if u in rel_sets]
    for k in ks:
        recalls, ndcgs = [], []
        for i in evaluated:
            rs = rel_sets[user_ids[i]]
            hits = np.array([c in rs for c in top[i, :k]], dtype=float)
            recalls.append(hits.sum() / len(rs))
            ideal = np.sum(1.0 / np.log2(np.arange(min(k, len(rs))) + 2))
            ndcgs.append(np.sum(hits / np.log2(np.arange(len(hits)) + 2)) / ideal)
        out[f"recall_{k}"] = float(np.mean(recalls)) if recalls else float("nan")
        out[f"full_ndcg_{k}"] = float(np.mean(ndcgs)) if ndcgs else float("nan")
    top10 = top[:, :10]
    out["coverage_10"] = float(len(np.unique(top10)) / len(item_ids))
    common = Counter(tuple(sorted(r)) for r in top10.tolist()).most_common(1)
    out["fixed_top10_share"] = float(common[0][1] / len(top10)) if len(top10) else float("nan")
    if item_vectors is not None:
        out["intra_list_diversity"] = intra_list_diversity(top10, item_vectors)
    out["retrieval_users"] = len(evaluated)
    out["retrieval_skipped_no_relevant"] = len(user_ids) - len(evaluated)
    return out


def intra_list_diversity(top: np.ndarray, item_vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance (1 - cos) inside each user's list, averaged over users."""
    norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
    unit = item_vectors / np.where(norms == 0, 1, norms)
    v = unit[top]  # (users, k, d)
    sims = np.einsum("ukd,ujd->ukj", v, v)
    k = top.shape[1]
    if k < 2:
        return float("nan")
    off = (sims.sum((1, 2)) - np.trace(sims, axis1=1, axis2=2)) / (k * (k - 1))
    return float(np.mean(1 - off))


ScoreMatrix = Callable[[np.ndarray, np.ndarray], np.ndarray]


def evaluate_impressions_only(score_matrix: ScoreMatrix, valid: pd.DataFrame, model: str = "model"
                              ) -> dict[str, float]:
    users = np.unique(valid["user_id"].to_numpy())
    items = np.unique(valid["item_id"].to_numpy())
    scores = score_matrix(users, items)
    return evaluate_impressions(valid.assign(score=scores[pd.Index(users).get_indexer(valid["user_id"]),
                                                          pd.Index(items).get_indexer(valid["item_id"])]),
                                model=model)


def evaluate_scorer(score_matrix: ScoreMatrix, valid: pd.DataFrame, seen: pd.DataFrame, candidates: np.ndarray,
                    item_vectors: np.ndarray | None = None, model: str = "model") -> dict[str, float]:
    """Impression + full-catalogue metrics for any scorer ``(user_ids, item_ids) -> (users, items) scores``.

    ``item_vectors`` (aligned with ``candidates``) feed intra-list diversity.
    """
    users = np.unique(valid["user_id"].to_numpy())
    cand = np.asarray(candidates)
    order = np.argsort(cand, kind="stable")
    cand = cand[order]
    vectors = item_vectors[order] if item_vectors is not None else None
    out = evaluate_impressions_only(score_matrix, valid, model)
    relevant = valid[valid["label"] == 1]
    out.update(retrieval_metrics(score_matrix(users, cand), users, cand, relevant, seen, vectors, model=model))
    return out
