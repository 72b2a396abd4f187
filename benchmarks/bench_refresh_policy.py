"""Refresh-policy study on synthetic worlds with two interest-drift rates: quality vs refresh frequency.

For each drift rate: generate a world (``--users``, 2,000 items, 14 days, active users), compute user
medoids for the replayed days, replay ``--days`` days with global medoids refreshed every N days
(``--every``) and print the study's table and recommendation. The hit-rate ratio of each policy
against daily refresh (same process, same users, same next days) is the comparable figure.

    python benchmarks/bench_refresh_policy.py          # ~2-3 min on 2 cores
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from recsys_notify.core.config import load_settings  # noqa: E402
from recsys_notify.core.storage import Storage  # noqa: E402
from recsys_notify.global_medoids import study  # noqa: E402
from recsys_notify.global_medoids.refresh_policy import recommend  # noqa: E402
from recsys_notify.synthetic import GeneratorConfig, generate  # noqa: E402
from recsys_notify.user_medoids import step as um  # noqa: E402

END = date(2026, 11, 14)


def one_world(drift: float, args: argparse.Namespace, root: Path) -> None:
    storage = Storage(str(root))
    began = time.perf_counter()
    generate(storage, GeneratorConfig(users=args.users, items=2000, days=14, end=END, seed=args.seed,
                                      median_interactions=150.0, interest_drift=drift))
    settings = load_settings(environ={"RECSYS__DATA_ROOT": str(root), "RECSYS__GLOBAL_MEDOIDS__K": str(args.k)})
    start, last = END - timedelta(days=args.days), END - timedelta(days=1)
    for i in range(args.days):
        um.run(storage, settings, start + timedelta(days=i), {"shards": 1})
    prepared = time.perf_counter() - began
    began = time.perf_counter()
    _, table = study.replay(storage, settings, study.parse({"start": start, "end": last, "every": args.every}))
    replayed = time.perf_counter() - began
    daily = table.set_index("every").loc[min(args.every)]
    table["item_vs_daily"] = table["hit_rate_item"] / daily["hit_rate_item"]
    print(f"\n## interest_drift = {drift} ({args.users} users, k = {args.k}, {start}..{last}; "
          f"world + user medoids {prepared:.0f} s, replay {replayed:.0f} s)\n")
    print(study.format_table(table))
    print("\nitem hit rate vs daily refresh: " + ", ".join(
        f"every {r.every} d {r.item_vs_daily:.2f}x" for r in table.itertuples()))
    print(f"recommendation: {recommend(table)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--days", type=int, default=8, help="replayed days")
    parser.add_argument("--every", type=lambda v: [int(n) for n in v.split(",")], default=[1, 3, 7])
    parser.add_argument("--drift", type=lambda v: [float(n) for n in v.split(",")], default=[0.0, 0.3])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # KMeans on a small world warns about small clusters every refresh
    with tempfile.TemporaryDirectory() as tmp:
        for i, drift in enumerate(args.drift):
            one_world(drift, args, Path(tmp) / f"world{i}")


if __name__ == "__main__":
    main()
