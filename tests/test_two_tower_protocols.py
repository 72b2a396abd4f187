"""Full-ranking protocols, tuned baselines and the history two-tower on tiny worlds built here."""

import numpy as np
import pandas as pd
import pytest

from recsys_notify.two_tower.history_model import HistoryConfig, fit_history
from recsys_notify.two_tower.metrics import NonFiniteScoresError
from recsys_notify.two_tower.protocols import evaluate, make_split
from recsys_notify.two_tower.ranking_baselines import QUICK_GRIDS, tune


def _world(n_users=80, n_items=60, per_user=16, seed=0):
    """Two taste groups (even / odd items), a popular head in each, timestamps increasing."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        own = np.arange(u % 2, n_items, 2)
        p = 1.0 / (np.arange(len(own)) + 1.0)
        for i in rng.choice(own, per_user, replace=False, p=p / p.sum()):
            rows.append((u + 1, int(i) * 10 + 5, len(rows)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "t"])
    frame["ts"] = pd.to_datetime(frame.pop("t"), unit="h", utc=True)
    return frame, np.arange(n_items + 5) * 10 + 5  # five catalogue items nobody touched


def _pairs(m):
    c = m.tocoo()
    return set(zip(c.row.tolist(), c.col.tolist()))


def test_random_split_is_seeded_disjoint_and_8_1_1():
    frame, items = _world()
    a, b = make_split(frame, items, "random", seed=3), make_split(frame, items, "random", seed=3)
    assert _pairs(a.test) == _pairs(b.test)
    assert _pairs(a.test) != _pairs(make_split(frame, items, "random", seed=4).test)
    tr, va, te = _pairs(a.train), _pairs(a.valid), _pairs(a.test)
    assert not (tr & va or tr & te or va & te) and len(tr | va | te) == len(frame)
    per_user = np.diff(a.train.indptr), np.diff(a.valid.indptr), np.diff(a.test.indptr)
    assert (per_user[0] == 14).all() and (per_user[1] == 1).all() and (per_user[2] == 1).all()  # 16 -> 14:1:1
    assert a.shape == (80, 65) and a.report["items_without_train"] >= 5


def test_leave_last_out_takes_the_latest_and_counts_short_users():
    frame, items = _world()
    short = pd.DataFrame({"user_id": [999, 999], "item_id": [5, 15],
                          "ts": pd.to_datetime([10_000, 10_001], unit="h", utc=True)})
    dup = frame.iloc[[0]].assign(ts=frame.ts.iloc[0] + pd.Timedelta(hours=1))
    s = make_split(pd.concat([frame, short, dup]), items, "leave_last_out")
    assert s.report["users_too_short_all_train"] == 1 and s.report["dropped_duplicate_interactions"] == 1
    last = frame.sort_values("ts").groupby("user_id").tail(1)
    rows, cols = pd.Index(s.user_ids).get_indexer(last.user_id), pd.Index(s.item_ids).get_indexer(last.item_id)
    assert _pairs(s.test) == set(zip(rows.tolist(), cols.tolist()))
    m = evaluate(lambda u: np.zeros((len(u), s.shape[1])), s, "test")
    assert m["evaluated_users"] == 80 and m["skipped_no_relevant"] == 1


def test_global_time_split_counts_cold_users_and_skips_them():
    frame, items = _world()
    late = pd.DataFrame({"user_id": [500, 500], "item_id": [5, 15],
                         "ts": pd.to_datetime([10_000, 10_001], unit="h", utc=True)})
    s = make_split(pd.concat([frame, late]), items, "global_time")
    assert s.report["test_cold_users"] >= 1 and s.report["test_cold_user_interactions"] >= 2
    m = evaluate(lambda u: np.zeros((len(u), s.shape[1])), s, "test")
    assert m["skipped_cold_user"] == s.report["test_cold_users"]
    assert m["evaluated_users"] + m["skipped_cold_user"] + m["skipped_no_relevant"] == s.shape[0]


def test_ranking_excludes_train_items_and_valid_items_on_test():
    frame, items = _world()
    s = make_split(frame, items, "random", seed=0)
    seen = (s.train + s.valid).toarray()
    target = s.test.toarray()
    # an oracle that puts seen items first, then the test items: only the exclusion makes it perfect
    oracle = evaluate(lambda u: 2.0 * seen[u] + target[u], s, "test")
    assert oracle["ndcg_10"] == pytest.approx(1.0) and oracle["recall_10"] == 1.0 and oracle["mrr_10"] == 1.0
    assert oracle["precision_10"] == pytest.approx(0.1) and oracle["hit_10"] == 1.0
    # on valid only train is excluded, so valid-stage seen items (the test ones here) stay rankable
    tv = s.train.toarray() * 2.0 + s.test.toarray()
    assert evaluate(lambda u: tv[u], s, "valid")["hit_10"] < 1.0


def test_hand_computed_metrics_and_ties_to_lower_item():
    frame, items = _world(n_users=2, per_user=10)
    s = make_split(frame, items, "leave_last_out")
    col = s.test.tocoo().col[np.argsort(s.test.tocoo().row)]
    def scorer(u):
        out = np.zeros((len(u), s.shape[1]))
        out[np.arange(len(u)), col[u]] = 0.0  # tie with everything: rank = #unseen lower-id items + 1
        return out
    m = evaluate(scorer, s, "test")
    excluded = (s.train + s.valid).toarray()
    ranks = [int((excluded[r, :col[r]] == 0).sum()) + 1 for r in range(2)]
    expected = np.mean([1 / np.log2(r + 1) if r <= 10 else 0.0 for r in ranks])
    assert m["ndcg_10"] == pytest.approx(expected)
    assert m["mrr_10"] == pytest.approx(np.mean([1 / r if r <= 10 else 0 for r in ranks]))


def test_non_finite_scores_raise_naming_model_and_count():
    frame, items = _world()
    s = make_split(frame, items, "random")
    def bad(u):
        out = np.zeros((len(u), s.shape[1]))
        out[0, :3] = np.nan
        out[1, 0] = np.inf
        return out
    with pytest.raises(NonFiniteScoresError, match=r"broken returned 4 non-finite score\(s\).*3 NaN, 1 inf"):
        evaluate(bad, s, "valid", model="broken")


def test_tuned_ease_knn_and_history_tower_beat_most_popular():
    frame, items = _world()
    s = make_split(frame, items, "random", seed=1)
    pop = evaluate(tune("most_popular", s).scorer, s, "test")
    for name in ("ease", "item_knn"):
        tuned = tune(name, s, QUICK_GRIDS[name])
        assert len(tuned.grid) == len(QUICK_GRIDS[name]["lam" if name == "ease" else "shrink"])
        assert evaluate(tuned.scorer, s, "test")["ndcg_10"] > pop["ndcg_10"] + 0.05
    result = fit_history(s, HistoryConfig(dim=16, epochs=20, eval_every=5, lr=1e-2, batch_users=32))
    assert result.best_epoch in {5, 10, 15, 20} and result.examples > 0
    assert evaluate(result.scorer, s, "test")["ndcg_10"] > pop["ndcg_10"] + 0.05
