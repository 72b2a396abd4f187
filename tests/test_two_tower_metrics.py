"""Metric definitions against hand-computed cases (MIND evaluate.py conventions, ties, no-positive users)."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from recsys_notify.two_tower.metrics import (
    NonFiniteScoresError,
    ap_at_k,
    auc_score,
    average_precision,
    evaluate_impressions,
    intra_list_diversity,
    mrr_score,
    ndcg_score,
    retrieval_metrics,
)


def test_mrr_and_ndcg_hand_computed():
    y = np.array([0, 1, 0, 1])
    s = np.array([0.9, 0.8, 0.1, 0.5])  # ranking: item0(0), item1(1), item3(1), item2(0)
    assert mrr_score(y, s) == pytest.approx((1 / 2 + 1 / 3) / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_score(y, s, 10) == pytest.approx(dcg / idcg)
    assert ndcg_score(y, s, 1) == 0.0
    # CUST-MAP@10: hits at ranks 2 and 3 -> (1/2 + 2/3) / min(10, 2)
    assert ap_at_k(y, s, 10) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert ap_at_k(y, s, 2) == pytest.approx((1 / 2) / 2)


def test_ties_go_to_the_earlier_position():
    y = np.array([0, 1, 0])
    s = np.zeros(3)  # all tied: input order is the ranking
    assert mrr_score(y, s) == pytest.approx(1 / 2)
    assert ndcg_score(y, s, 10) == pytest.approx(1 / math.log2(3))
    # AUC gives ties half credit, as sklearn does
    assert auc_score(y, s) == 0.5


def test_auc_and_ap_equal_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(2, 12))
        y = rng.integers(0, 2, n)
        if y.sum() in (0, n):
            continue
        s = rng.integers(0, 3, n).astype(float)
        assert auc_score(y, s) == pytest.approx(roc_auc_score(y, s))
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_users_without_positives_are_skipped_and_counted():
    frame = pd.DataFrame({
        "user_id": [1, 1, 1, 2, 2, 3, 3],
        "item_id": [10, 11, 12, 10, 11, 10, 11],
        "label": [1, 0, 0, 0, 0, 1, 1],
        "score": [0.2, 0.9, 0.1, 0.5, 0.4, 0.3, 0.3],
    })
    out = evaluate_impressions(frame)
    assert out["impressions"] == 2 and out["skipped_no_positive"] == 1
    assert out["auc_skipped_no_negative"] == 1  # user 3 has only positives: no AUC, ranking metrics kept
    assert out["auc"] == pytest.approx(0.5)  # user 1 only: positive beats one of two negatives
    assert out["mrr"] == pytest.approx((1 / 2 + (1 + 1 / 2) / 2) / 2)  # MIND: sum(1/rank) / #positives
    assert out["map"] == pytest.approx((0.5 + 1.0) / 2)


def test_impressions_are_ordered_by_item_id_before_tie_breaking():
    a = pd.DataFrame({"user_id": [1, 1], "item_id": [20, 10], "label": [1, 0], "score": [0.0, 0.0]})
    assert evaluate_impressions(a)["mrr"] == pytest.approx(0.5)  # tie -> item 10 first


def test_retrieval_metrics_exclude_seen_and_measure_concentration():
    items = np.array([1, 2, 3, 4])
    users = np.array([7, 8])
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    relevant = pd.DataFrame({"user_id": [7, 8], "item_id": [2, 4]})
    seen = pd.DataFrame({"user_id": [7], "item_id": [1]})
    out = retrieval_metrics(scores, users, items, relevant, seen, ks=(1, 2))
    # user 7: item 1 removed -> top1 = item 2 (hit); user 8: top2 = items 1,2 (miss)
    assert out["recall_1"] == pytest.approx(0.5)
    assert out["full_ndcg_1"] == pytest.approx(0.5)
    assert out["coverage_10"] == pytest.approx(1.0)
    assert out["fixed_top10_share"] == pytest.approx(1.0)  # both users get the same 4 items


def test_intra_list_diversity():
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert intra_list_diversity(np.array([[0, 1]]), vecs) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[0, 2]]), vecs) == pytest.approx(0.0)


# MIND's evaluate.py (msnews.github.io), re-typed: the reference for ties="mind"
def _mind_dcg_score(y_true, y_score, k=10):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order[:k])
    gains = 2 ** y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return np.sum(gains / discounts)


def _mind_ndcg_score(y_true, y_score, k=10):
    best = _mind_dcg_score(y_true, y_true, k)
    actual = _mind_dcg_score(y_true, y_score, k)
    return actual / best


def _mind_mrr_score(y_true, y_score):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order)
    rr_score = y_true / (np.arange(len(y_true)) + 1)
    return np.sum(rr_score) / np.sum(y_true)


def test_ties_mind_reproduces_minds_evaluate_py_and_default_differs():
    rng = np.random.default_rng(0)
    differs = 0
    for _ in range(300):
        n = int(rng.integers(2, 60))
        y = rng.integers(0, 2, n)
        y[rng.integers(n)] = 1
        s = rng.integers(0, 3, n) / 2.0  # heavy ties
        for k in (5, 10):
            assert ndcg_score(y, s, k, ties="mind") == pytest.approx(_mind_ndcg_score(y, s, k), abs=1e-12)
        assert mrr_score(y, s, ties="mind") == pytest.approx(_mind_mrr_score(y, s), abs=1e-12)
        differs += mrr_score(y, s) != pytest.approx(_mind_mrr_score(y, s))
    assert differs > 50  # the documented rule (lower index first) is a different tie order
    frame = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 20], "label": [0, 1], "score": [0.0, 0.0]})
    assert evaluate_impressions(frame, ties="mind")["mrr"] == 1.0 and evaluate_impressions(frame)["mrr"] == 0.5
    with pytest.raises(ValueError, match="ties must be one of lower, mind"):
        mrr_score(y, s, ties="random")


def test_non_finite_scores_are_an_error_naming_the_model():
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 10], "label": [1, 0, 1],
                          "score": [np.nan, 0.2, np.inf]})
    with pytest.raises(NonFiniteScoresError, match=r"exp_a returned 2 non-finite score\(s\) of 3 \(1 NaN, 1 inf\)"):
        evaluate_impressions(frame, model="exp_a")
    scores = np.array([[1.0, np.nan]])
    with pytest.raises(NonFiniteScoresError, match="exp_b returned 1"):
        retrieval_metrics(scores, np.array([7]), np.array([1, 2]), pd.DataFrame({"user_id": [7], "item_id": [1]}),
                          pd.DataFrame({"user_id": [], "item_id": []}), model="exp_b")
