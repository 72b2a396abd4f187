"""Benchmark: the notifications step for 1M users (target: under 2 minutes on 2 cores).

Upstream tables are synthesised directly at scale (untimed): items whose 128-d embeddings sit
around topic centres, users with 1-8 medoids from 1-3 topics, ~2 events per user and day over the
14-day history window, 500 global clusters, templates, and 7 days of earlier delivery logs.
The timed part is the whole ``notifications`` step (reads, retrieval, filters, ranking, rendering,
writes). For comparison, a naive per-user loop (faiss query per user, Python-set filters,
per-user scoring) runs on a subset in the same process and is extrapolated.

    PYTHONPATH=src python benchmarks/bench_notifications.py [--users 1000000] [--baseline-users 2000]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from datetime import date, timedelta

import faiss
import numpy as np
import pandas as pd

from recsys_notify.core.config import Settings
from recsys_notify.core.storage import Storage
from recsys_notify.notifications import arrays
from recsys_notify.notifications import step as notifications

DT = date(2026, 11, 14)
LANGS = np.array(["en", "es", "pt", "hi", "id", "ru", "de"])
LANG_P = np.array([0.5, 0.15, 0.1, 0.1, 0.05, 0.05, 0.05])


def synthesise(storage: Storage, n_users: int, n_items: int, clusters: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    topics = 200
    centres = rng.normal(size=(topics, 128)).astype(np.float32)
    item_topic = rng.integers(0, topics, n_items)
    emb = centres[item_topic] + 0.6 * rng.normal(size=(n_items, 128)).astype(np.float32)
    item_ids = np.arange(n_items, dtype=np.int64) * 3 + 11
    created_day = np.where(rng.random(n_items) < 0.8, -rng.integers(14, 120, n_items), -rng.integers(0, 14, n_items))
    item_lang = rng.choice(LANGS, n_items, p=LANG_P)
    items = pd.DataFrame({
        "item_id": item_ids, "creator_id": rng.integers(1, 5000, n_items), "language": item_lang,
        "duration_s": rng.uniform(5, 60, n_items),
        "created_ts": pd.Timestamp(DT, tz="UTC")
        + pd.to_timedelta(created_day * 86_400 + rng.integers(0, 86_400, n_items), unit="s"),
        "caption": [f"clip {i} #topic{t}" for i, t in zip(item_ids, item_topic)],
        "embedding": list(emb),
    })
    storage.write("items", DT - timedelta(days=120), items)

    user_ids = np.arange(n_users, dtype=np.int64) * 5 + 7
    user_lang = np.where(rng.random(n_users) < 0.9, rng.choice(LANGS, n_users, p=LANG_P), "en")
    storage.write("users", DT - timedelta(days=120), pd.DataFrame({
        "user_id": user_ids, "language": user_lang,
        "signup_ts": pd.Timestamp(DT - timedelta(days=200), tz="UTC")}))

    # interests: 1-3 topics per user; events and medoids drawn from those topics
    by_topic = np.argsort(item_topic, kind="stable")
    starts = np.searchsorted(item_topic[by_topic], np.arange(topics + 1))
    user_topics = rng.integers(0, topics, (n_users, 3))

    def draw(users: np.ndarray) -> np.ndarray:
        t = user_topics[users, rng.integers(0, 3, len(users))]
        return by_topic[starts[t] + (rng.random(len(users)) * (starts[t + 1] - starts[t])).astype(np.int64)]

    for d in range(14):
        day = DT - timedelta(days=13 - d)
        users = np.repeat(np.arange(n_users), rng.poisson(2.0, n_users))
        item = draw(users)
        completion = rng.beta(2, 2, len(users)) * 1.2
        storage.write("events", day, pd.DataFrame({
            "user_id": user_ids[users], "item_id": item_ids[item], "session_id": users.astype(np.int64),
            "ts": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400, len(users)), unit="s"),
            "watch_time_s": completion * 30, "duration_s": 30.0, "liked": rng.random(len(users)) < 0.1,
            "shared": rng.random(len(users)) < 0.02, "completion": completion}))

    n_med = rng.integers(1, 9, n_users)
    m_user = np.repeat(np.arange(n_users), n_med)
    m_item = draw(m_user)
    medoids = pd.DataFrame({"user_id": user_ids[m_user], "item_id": item_ids[m_item]}).drop_duplicates()
    medoids["rank"] = medoids.groupby("user_id").cumcount().astype(np.int64)
    medoids["cluster_id"] = medoids["rank"]
    medoids["cluster_size"] = rng.integers(2, 30, len(medoids))
    medoids["importance"] = medoids["cluster_size"] / (1.0 + medoids["rank"])
    medoids["weight"] = medoids["importance"] / medoids.groupby("user_id")["importance"].transform("sum")
    storage.write("user_medoids", DT, medoids)

    vec16 = np.ascontiguousarray(emb[:, :16])
    km = faiss.Kmeans(16, clusters, niter=8, seed=seed, max_points_per_centroid=64)
    km.train(vec16)
    dist, assign = km.index.search(vec16, 1)
    assign = assign[:, 0]
    frame = pd.DataFrame({"item": np.arange(n_items), "cluster": assign, "distance": dist[:, 0], "lang": item_lang})
    frame = frame.sort_values(["cluster", "distance"])
    star = frame.drop_duplicates("cluster").assign(row_lang="*")
    per_lang = frame.drop_duplicates(["cluster", "lang"]).assign(row_lang=lambda f: f["lang"])
    rows = pd.concat([star, per_lang])
    storage.write("global_medoids", DT - timedelta(days=3), pd.DataFrame({
        "cluster_id": rows["cluster"].astype(np.int64), "language": rows["row_lang"], "item_id": item_ids[rows["item"]],
        "cluster_size": 100, "vector": list(vec16[rows["item"].to_numpy()]), "source": "kmeans"}))
    members = np.unique(m_item)
    storage.write("global_clusters", DT - timedelta(days=3), pd.DataFrame({
        "item_id": item_ids[members], "cluster_id": assign[members].astype(np.int64), "distance": dist[members, 0]}))
    storage.write("templates", DT - timedelta(days=3), pd.DataFrame({
        "cluster_id": np.arange(clusters), "language": "*", "template_id": [f"auto-{c}" for c in range(clusters)],
        "title": "New in your interests", "body": "{caption}", "source": "auto", "keywords": [[]] * clusters}))
    for d in range(1, 8):
        storage.write("delivery_log", DT - timedelta(days=d), pd.DataFrame({
            "user_id": user_ids, "date": DT - timedelta(days=d), "item_id": item_ids[draw(np.arange(n_users))],
            "holdout": rng.random(n_users) < 0.05}))


def naive(storage: Storage, settings: Settings, n: int) -> float:
    """Per-user loop over the same inputs: query, filter with sets, score, pick. Returns seconds per user."""
    inputs = notifications.resolve_inputs(storage, settings, DT)
    inp = arrays.build(notifications.read_tables(inputs, settings, DT), settings, DT)
    cat = inp.catalogue
    index = faiss.IndexFlatIP(inp.cluster_vectors.shape[1])
    index.add(inp.cluster_vectors)
    members = inp.members.groupby("cluster_pos")["item_pos"].apply(list).to_dict()
    reps = inp.cluster_reps.groupby("cluster_pos")["item_pos"].apply(list).to_dict()
    excluded = set(inp.excluded.tolist())
    s_user, s_item = inp.seeds["user_pos"].to_numpy(), inp.seeds["item_pos"].to_numpy()
    s_weight = inp.seeds["weight"].to_numpy()
    users = np.unique(s_user)[:n]
    start = time.perf_counter()
    for u in users:
        a, b = np.searchsorted(s_user, [u, u + 1])
        sims, idx = index.search(cat.vectors[s_item[a:b]], settings.notifications.k_neighbours)
        best_score = -math.inf
        for row, w in enumerate(s_weight[a:b]):
            for c, sim in zip(idx[row], sims[row]):
                for item in reps.get(c, []) + members.get(c, []):
                    lang = inp.user_lang[u]
                    if (u * inp.n_items + item) in excluded or (lang >= 0 and cat.lang[item] != lang):
                        continue
                    score = max(sim * w, 0.01) * cat.prior[item]
                    best_score = max(best_score, score)
    return (time.perf_counter() - start) / len(users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--baseline-users", type=int, default=2000)
    parser.add_argument("--root", help="data root (default: a temp dir)")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="bench-notify-")
    storage = Storage(root)
    settings = Settings(data_root=root)
    t0 = time.perf_counter()
    synthesise(storage, args.users, args.items, args.clusters)
    print(f"synthesised {args.users:,} users / {args.items:,} items in {time.perf_counter() - t0:.0f}s under {root}")

    t0, c0 = time.perf_counter(), time.process_time()
    stats = notifications.run(storage, settings, DT, {"use_champion": False}).summary
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"notifications: {took:.1f}s wall, {cpu:.1f}s CPU for {stats['users']:,} users "
          f"({stats['notifications']:,} notifications, "
          f"{stats['holdout']:,} holdout, sources {stats['sources']}) -> {'PASS' if took < 120 else 'FAIL'} (< 120 s)")
    per_user = naive(storage, settings, args.baseline_users)
    print(f"naive per-user loop: {per_user * 1e3:.2f} ms/user on {args.baseline_users:,} users -> "
          f"{per_user * args.users:.0f}s extrapolated; speed-up x{per_user * args.users / took:.1f}")


if __name__ == "__main__":
    main()
