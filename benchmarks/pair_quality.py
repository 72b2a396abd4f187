"""Pair quality on the generator's ground truth: are positive pairs enriched for same-topic items?

Generates a small synthetic world, mines pairs at several ``min_clients`` and prints, per pair
type, the pair count, the share of pairs whose two items share a hidden topic and the mean content
similarity.

    PYTHONPATH=src python benchmarks/pair_quality.py
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import date

from recsys_notify.core.config import PairMiningSettings
from recsys_notify.core.datasets import TRUTH_ITEMS
from recsys_notify.core.inputs import as_of, resolve
from recsys_notify.core.sql_engine import open_engine
from recsys_notify.core.storage import Storage
from recsys_notify.pair_mining.evaluation import same_topic_share
from recsys_notify.pair_mining.step import compute_pairs
from recsys_notify.synthetic import GeneratorConfig, generate

END = date(2026, 11, 14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-clients", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as root:
        storage = Storage(f"{root}/data")
        generate(storage, GeneratorConfig(users=args.users, items=args.items, days=7, end=END, seed=args.seed))
        truth = resolve(storage, {"t": as_of(TRUTH_ITEMS, END)}).dimension("t", ["item_id", "topic"])
        print("min_clients  type      pairs  same_topic  mean_content_sim")
        for min_clients in args.min_clients:
            with open_engine("duckdb") as engine:
                pairs = compute_pairs(storage, END, PairMiningSettings(min_clients=min_clients), engine).pairs
            frame = pairs.to_pandas()
            share = same_topic_share(frame, truth)
            for pair_type in ("positive", "negative"):
                sims = frame.loc[frame["pair_type"] == pair_type, "content_sim"]
                print(f"{min_clients:>11}  {pair_type:8} {len(sims):>6}  {share[pair_type]:>10.2f}  "
                      f"{sims.mean():>16.2f}")


if __name__ == "__main__":
    main()
