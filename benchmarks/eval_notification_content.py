"""Notification content on a synthetic world: languages and text fallbacks, popular alternates, keyframes.

Generates a world, writes the medoid tables with the test stand-in (``tests/notify_fixtures.py``) for
each evaluated day, then runs the ``notifications`` step day after day (so delivery history builds up)
once per variant, each on its own copy of the data:

* ``alternates_per_cluster=0`` (no popular alternates) against the default: share of pushes from a
  fallback source, and next-day hit rates (item and cluster, pooled over the days);
* ``creator_affinity=true`` against the default: hit rates, and on ground truth the share of pushes
  whose item is of one of the user's topics and of their hidden style;
* keyframes of the default run against ground truth (``truth_frames.on_topic``): on-topic rate of the
  chosen frame, of the item's first frame and of a random frame of the same pushes;
* the message languages and the template fallback levels (every level counted).

    PYTHONPATH=src:. python benchmarks/eval_notification_content.py --users 1500 --items 3000 --days 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_notify.core.storage import Storage
from recsys_notify.synthetic import GeneratorConfig, generate

END = date(2026, 11, 14)
LAST = END - timedelta(days=1)  # the newest day with a next day to evaluate on


def run_days(root: Path, days: list[date], params: dict) -> tuple[Storage, dict[str, float]]:
    """Run the step over ``days`` on ``root``; pooled hit rates and source shares."""
    os.environ["RECSYS__DATA_ROOT"] = str(root)
    from recsys_notify.core.config import get_settings
    from recsys_notify.notifications import step as nt
    from recsys_notify.notifications.candidates import FALLBACKS

    get_settings.cache_clear()
    storage, pooled, sources, n_pushes = Storage(str(root)), Counter(), Counter(), 0
    for day in days:
        m = nt.run(storage, get_settings(), day, {**params, "use_champion": False}).summary
        n = m["evaluated_users"]
        pooled["evaluated"] += n
        for key in ("hit_rate_item", "hit_rate_cluster", "popular_hit_rate_item", "popular_hit_rate_cluster"):
            pooled[key] += m[key] * n
        outbox = storage.read("outbox", day)
        sources.update(outbox["source"].tolist())
        n_pushes += len(outbox)
        truth = relevance(storage, outbox)
        pooled["topic_and_style"] += truth["topic_and_style"].sum()
        pooled["truth_topic"] += truth["topic"].sum()
        pooled["truth_n"] += len(truth)
    out = {k: v / max(pooled["evaluated"], 1) for k, v in pooled.items() if k.startswith(("hit", "popular"))}
    out["truth_topic"] = pooled["truth_topic"] / max(pooled["truth_n"], 1)
    out["truth_topic_style"] = pooled["topic_and_style"] / max(pooled["truth_n"], 1)
    out["evaluated"] = pooled["evaluated"]
    out["pushes"] = n_pushes
    out["fallback_share"] = sum(sources[s] for s in FALLBACKS) / max(n_pushes, 1)
    out["alternate_share"] = sources["cluster_alternate"] / max(n_pushes, 1)
    return storage, out


def relevance(storage: Storage, outbox: pd.DataFrame) -> pd.DataFrame:
    """Per push (ground truth): item topic among the user's topics, and also one of the user's styles."""
    from tests.frames import upto

    items = upto(storage, "truth_items", outbox["date"].iloc[0], columns=["item_id", "topic", "style"])
    users = upto(storage, "truth_users", outbox["date"].iloc[0], columns=["user_id", "topics", "styles"])
    rows = outbox[["user_id", "item_id"]].merge(items, on="item_id").merge(users, on="user_id")
    topic = np.array([t in set(ts) for t, ts in zip(rows["topic"], rows["topics"])])
    style = np.array([s in set(ss) for s, ss in zip(rows["style"], rows["styles"])])
    return pd.DataFrame({"topic": topic, "topic_and_style": topic & style})


def frame_rates(storage: Storage, days: list[date], seed: int = 0) -> dict[str, float]:
    """On-topic rate of the chosen keyframe vs the first and a random frame, over pushes whose item has frames."""
    from tests.frames import upto

    truth = upto(storage, "truth_frames", days[-1]).sort_values(["item_id", "frame_ts"])
    outbox = pd.concat([storage.read("outbox", d) for d in days], ignore_index=True)
    outbox = outbox[outbox["item_id"].isin(truth["item_id"])]
    chosen = outbox.merge(truth, on=["item_id", "frame_ts"], how="left")
    first = outbox[["item_id"]].merge(truth.drop_duplicates("item_id"), on="item_id")
    rng = np.random.default_rng(seed)
    groups = truth.groupby("item_id")["on_topic"].apply(np.asarray)
    random = [bool(g[rng.integers(len(g))]) for g in groups.loc[outbox["item_id"]]]
    return {"pushes_with_frames": len(outbox), "cover_share": float(chosen["frame_ts"].isna().mean()),
            "chosen": float(chosen["on_topic"].fillna(False).astype(bool).mean()),
            "first": float(first["on_topic"].mean()), "random": float(np.mean(random)),
            "all_frames": float(truth["on_topic"].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=4, help="evaluated days ending on the day before the last")
    args = parser.parse_args()
    from tests.notify_fixtures import build_upstream

    base = Path(tempfile.mkdtemp(prefix="content-eval-")) / "world"
    storage = Storage(str(base))
    generate(storage, GeneratorConfig(users=args.users, items=args.items, seed=args.seed, end=END))
    days = [LAST - timedelta(days=k) for k in range(args.days - 1, -1, -1)]
    for day in days:
        build_upstream(storage, day)
    print(f"world: {args.users} users / {args.items} items, seed {args.seed}; days {days[0]}..{days[-1]}")

    results = {}
    variants = {"no alternates": {"alternates_per_cluster": 0}, "popular alternates (default)": {},
                "creator affinity": {"creator_affinity": True}}
    for name, params in variants.items():
        root = base.parent / name.split()[0]
        shutil.copytree(base, root)
        results[name] = run_days(root, days, params)[1]
    print("\n| variant | pushes | fallback share | alternates share | hit rate item | hit rate cluster "
          "| popular item | popular cluster | truth: user's topic | truth: topic and style |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['pushes']:,} | {r['fallback_share']:.1%} | {r['alternate_share']:.1%} "
              f"| {r['hit_rate_item']:.2%} | {r['hit_rate_cluster']:.1%} | {r['popular_hit_rate_item']:.2%} "
              f"| {r['popular_hit_rate_cluster']:.1%} | {r['truth_topic']:.1%} | {r['truth_topic_style']:.1%} |")

    default = Storage(str(base.parent / "popular"))
    f = frame_rates(default, days, args.seed)
    print(f"\nkeyframes ({f['pushes_with_frames']:,} pushes whose item has frames; "
          f"{f['all_frames']:.1%} of all frames are on topic; cover used for {f['cover_share']:.1%}):")
    print("| frame | on-topic rate |\n|---|---|")
    for key, label in (("chosen", "closest to the matching interest"), ("first", "first frame"),
                       ("random", "random frame")):
        print(f"| {label} | {f[key]:.1%} |")

    outbox = pd.concat([default.read("outbox", d) for d in days], ignore_index=True)
    levels = outbox["reason"].str.extract(r"; text \S+ \((\w+),")[0].value_counts(normalize=True)
    print("\nmessage languages:", ", ".join(f"{k} {v:.1%}" for k, v in outbox["language"].value_counts(
        normalize=True).items()))
    print("template level:", ", ".join(f"{k} {v:.1%}" for k, v in levels.items()))


if __name__ == "__main__":
    main()
