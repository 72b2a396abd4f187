"""User medoids: weights, batched DBSCAN vs sklearn, slot allocation, determinism, PinnerSage, sharding, coverage."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from recsys_notify.core import clustering
from recsys_notify.core.config import InteractionWeights, UserMedoidSettings, load_settings
from recsys_notify.core.embeddings import l2_normalize
from recsys_notify.core.interaction_weights import weigh_interactions
from recsys_notify.user_medoids import medoids as um
from recsys_notify.user_medoids import step as um_step

DAY = date(2026, 11, 14)


def _blobs(rng, centres, per, spread=0.03, extra_noise=0):
    """Unit vectors around given centres plus isolated random points."""
    dim = centres.shape[1]
    pts = [c + rng.normal(0, spread, (n, dim)) for c, n in zip(centres, per)]
    if extra_noise:
        pts.append(rng.normal(0, 1, (extra_noise, dim)))
    return l2_normalize(np.concatenate(pts).astype(np.float32))


def _interactions(vectors_by_user: dict[int, np.ndarray], rng, age_days=None) -> tuple[pd.DataFrame, np.ndarray]:
    rows, mats = [], []
    for user, X in sorted(vectors_by_user.items()):
        n = len(X)
        ages = np.zeros(n) if age_days is None else age_days[user]
        rows.append(pd.DataFrame({
            "user_id": user, "item_id": np.arange(n) + 1000 * user,
            "weight": rng.choice([1.0, 1.2, 1.5, 2.0, 2.5, 3.0], n),
            "last_ts": pd.Timestamp(datetime(2026, 11, 14, 23, 59, tzinfo=timezone.utc))
            - pd.to_timedelta(ages, unit="D"),
            "n_events": 1,
        }))
        mats.append(X)
    return pd.concat(rows, ignore_index=True), np.concatenate(mats)


def test_interaction_weight_table():
    w = InteractionWeights()
    ts = pd.Timestamp("2026-11-14", tz="UTC")
    events = pd.DataFrame({
        "user_id": [1, 1, 1, 1, 1, 1, 1, 1], "item_id": [1, 2, 3, 4, 5, 6, 6, 7],
        "ts": [ts] * 8, "completion": [0.1, 0.9, 0.1, 0.1, 0.95, 0.1, 0.9, 1.0],
        "liked": [False, False, True, False, True, False, True, True],
        "shared": [False, False, False, True, False, False, False, True],
    })
    got = weigh_interactions(events, w).set_index("item_id")["weight"].to_dict()
    # plain view, full watch, like, share, watch+like, like and full watch across two events, all three
    assert got == {1: w.view, 2: w.full_watch, 3: w.like, 4: w.share, 5: w.any_two, 6: w.any_two, 7: w.all_three}


@pytest.mark.parametrize("sizes,expected", [([30, 40, 50], [3, 4, 5]), ([1, 1, 1], [1, 1, 1]),
                                            ([100, 1, 1], [12, 0, 0]), ([5, 5, 5, 5, 5], [3, 3, 2, 2, 2])])
def test_largest_remainder_allocation(sizes, expected):
    sizes = np.array(sizes)
    quota = um.allocate_slots(np.zeros(len(sizes), np.int64), sizes, np.array([sizes.sum()]), 12)
    assert quota.tolist() == expected
    assert quota.sum() == min(12, sizes.sum())


def test_allocation_is_per_user_and_ties_prefer_heavier_clusters():
    cluster_user = np.array([0, 0, 0, 1, 1])
    sizes = np.array([30, 40, 50, 1, 1])
    quota = um.allocate_slots(cluster_user, sizes, np.array([120, 2]), 12)
    assert quota.tolist() == [3, 4, 5, 1, 1]
    quota = um.allocate_slots(np.zeros(13, np.int64), np.ones(13, np.int64), np.array([13]), 12,
                              tiebreak=np.arange(13, dtype=float))
    assert quota[0] == 0 and quota.sum() == 12  # the lightest singleton loses the tie


def test_batched_dbscan_matches_sklearn(monkeypatch):
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(1)
    monkeypatch.setattr(clustering, "BIG_USER", 64)  # exercise the row-blocked path as well
    monkeypatch.setattr(clustering, "ROW_BLOCK", 16)
    users = []
    for _ in range(25):
        k = rng.integers(1, 5)
        users.append(_blobs(rng, rng.normal(0, 1, (k, 16)), rng.integers(1, 40, k),
                            extra_noise=int(rng.integers(0, 6))))
    sizes = np.array([len(x) for x in users])
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    X = np.concatenate(users)
    component, core = clustering.dbscan_components(starts, sizes, X, eps=0.15, min_samples=3)
    for s, n, Xu in zip(starts, sizes, users):
        ref = DBSCAN(eps=0.15, min_samples=3, metric="cosine").fit(Xu)
        ours = component[s:s + n]
        assert (np.isin(np.arange(n), ref.core_sample_indices_) == core[s:s + n]).all()
        # same partition: noise as singletons on both sides
        ref_labels = np.where(ref.labels_ < 0, -1 - np.arange(n), ref.labels_)
        pairs_ref = ref_labels[:, None] == ref_labels[None, :]
        pairs_ours = ours[:, None] == ours[None, :]
        assert (pairs_ref == pairs_ours).all()
    assert len(set(component[starts[0]:starts[0] + sizes[0]]) & set(component[starts[1]:starts[1] + sizes[1]])) == 0


@pytest.mark.parametrize("n", [0, 1, 9, 2000])
def test_row_labels_and_grouped_order_equal_their_sorting_definitions(n):
    rng = np.random.default_rng(n)
    component = rng.integers(0, max(n, 1), n) // 3 * 3  # row numbers, some unused, repeated
    for got, want in zip(clustering.row_labels(component), np.unique(component, return_inverse=True,
                                                                     return_counts=True)):
        np.testing.assert_array_equal(got, want)
    group, key = rng.integers(0, 40, n), rng.integers(0, 9, n).astype(float)
    key[rng.random(n) < 0.1] = np.nan  # ties and NaN keep row order
    np.testing.assert_array_equal(clustering.grouped_order(group, key), np.lexsort((key, group)))


def test_noise_points_become_singleton_clusters_with_medoids():
    rng = np.random.default_rng(2)
    X = _blobs(rng, rng.normal(0, 1, (2, 16)) * 3, [10, 10], extra_noise=0)
    outliers = l2_normalize(np.eye(16, dtype=np.float32)[:2] * 5 + rng.normal(0, 0.01, (2, 16)).astype(np.float32))
    frame, M = _interactions({7: np.concatenate([X, outliers])}, rng)
    cfg = UserMedoidSettings(max_medoids=22)
    out, stats = um.compute_medoids(frame, M, DAY, cfg)
    assert stats.noise_points == 2 and stats.clusters == 4
    singles = out[out["cluster_size"] == 1]
    assert sorted(singles["item_id"]) == [7000 + 20, 7000 + 21]
    assert len(out) == 22  # every item gets a slot when slots >= items


def test_deterministic_per_user_date_seed_and_independent_of_batch():
    rng = np.random.default_rng(3)
    users = {u: _blobs(rng, rng.normal(0, 1, (3, 16)), [30, 40, 50]) for u in range(1, 6)}
    frame, X = _interactions(users, rng)
    cfg = UserMedoidSettings()
    a, _ = um.compute_medoids(frame, X, DAY, cfg)
    b, _ = um.compute_medoids(frame, X, DAY, cfg)
    pd.testing.assert_frame_equal(a, b)
    assert (a.groupby(["user_id", "cluster_size"]).size().unstack().to_numpy() == [3, 4, 5]).all()
    only3 = frame["user_id"] == 3
    c, _ = um.compute_medoids(frame[only3].reset_index(drop=True), X[only3.to_numpy()], DAY, cfg)
    pd.testing.assert_frame_equal(c, a[a["user_id"] == 3].reset_index(drop=True))
    other_seed, _ = um.compute_medoids(frame, X, DAY, cfg.model_copy(update={"seed": 1}))
    other_day, _ = um.compute_medoids(frame, X, DAY + timedelta(days=1), cfg)
    assert set(other_seed["item_id"]) != set(a["item_id"]) and set(other_day["item_id"]) != set(a["item_id"])


def test_pinnersage_picks_exact_medoids_of_most_important_clusters():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 1, (4, 16)) * 3
    X = _blobs(rng, centres, [8, 8, 8, 8], spread=0.05)
    ages = {1: np.repeat([0.0, 1.0, 20.0, 40.0], 8)}  # same sizes, different recency
    frame, M = _interactions({1: X}, rng, ages)
    frame["weight"] = 1.0
    cfg = UserMedoidSettings(max_medoids=3, decay_lambda=0.1)
    out, _ = um.compute_medoids(frame, M, DAY, cfg.model_copy(update={"algorithm": "pinnersage"}))
    assert len(out) == 3 and out["importance"].is_monotonic_decreasing
    groups = np.repeat(np.arange(4), 8)
    chosen_groups = [groups[i - 1000] for i in out["item_id"]]
    assert chosen_groups == [0, 1, 2]  # the oldest cluster is dropped
    for item, g in zip(out["item_id"], chosen_groups):
        members = np.flatnonzero(groups == g)
        cost = (1 - M[members] @ M[members].T).sum(axis=1)
        assert item - 1000 == members[np.argmin(cost)]


def test_sharded_refresh_equals_single_shard_and_counts_skipped(world):
    settings = load_settings(environ={"RECSYS__DATA_ROOT": str(world.root)})
    one = um_step.run(world, settings, DAY, {"shards": 1}).summary
    single = world.read("user_medoids", DAY)
    three = um_step.run(world, settings, DAY, {"shards": 3}).summary
    pd.testing.assert_frame_equal(world.read("user_medoids", DAY), single)
    assert one["users_skipped"] == three["users_skipped"] > 0
    evaluated = [{k: v for k, v in summary.items() if k.startswith("eval_")} for summary in (one, three)]
    assert evaluated[0] == evaluated[1] and evaluated[0]["eval_coverage_users"] > 0  # the same users checked
    assert three["users_with_medoids"] + three["users_skipped"] == three["users"]
    assert single.groupby("user_id")["rank"].max().max() <= settings.user_medoids.max_medoids
    world.delete("user_medoids_shard_001_of_003", DAY)
    with pytest.raises(Exception, match="user_medoids_shard_001_of_003 has no partition for 2026-11-14"):
        um_step.finish(world, settings, DAY, {"shards": 3})


def test_the_coverage_check_reads_whole_buckets_of_about_eval_users():
    assert um_step.eval_slice(1_000, 64) == 1  # a small world: every user
    assert um_step.eval_slice(1_000_000, 64) == 32  # 31,250 users: 1/32 of the events read, not a shard's
    assert um_step.eval_slice(100_000, 64) == 4
    assert um_step.eval_slice(100_000, 60) == 5


def test_medoids_cover_true_interests_better_than_top_weight(world):
    settings = load_settings(environ={"RECSYS__DATA_ROOT": str(world.root)})
    result = um_step.run(world, settings, DAY, {"shards": 1}).summary
    assert result["eval_topic_coverage"] >= 0.90
    assert result["eval_topic_coverage"] > result["eval_baseline_topic_coverage"]


@pytest.mark.parametrize("algorithm", ["dbscan", "hdbscan", "pinnersage"])
def test_vectors_gathered_per_item_give_the_medoids_of_a_row_per_interaction(algorithm):
    """A shard hands one vector per distinct item and each row's item code; the medoids are those of the rows."""
    rng = np.random.default_rng(5)
    users = {u: _blobs(rng, rng.normal(0, 1, (3, 16)), [12, 20, 6]) for u in range(1, 5)}
    users[9] = users[9 - 8][:2]  # a user under min_interactions is skipped around
    frame, X = _interactions(users, rng)
    codes = rng.permutation(len(X))
    matrix = np.empty_like(X)
    matrix[codes] = X
    cfg = UserMedoidSettings(algorithm=algorithm)
    want, want_stats = um.compute_medoids(frame, X, DAY, cfg)
    got, got_stats = um.compute_medoids(frame, clustering.GatheredRows(matrix, codes), DAY, cfg)
    pd.testing.assert_frame_equal(got, want)
    assert got_stats == want_stats and got_stats.users_skipped == 1 and len(got) > 10
