"""MovieLens-100K: two-tower configs vs most-popular, ALS and item-kNN on the same chronological split.

Fetches ML-100K from the ``recbole`` wheel on PyPI (``pip download --no-deps recbole``; the wheel
ships RecBole's atomic files under recbole/dataset_example/ml-100k), or reads ``--data DIR`` holding
u.data/u.item/u.user or the atomic files. Prints every metric per model and checks that the best
two-tower NDCG@10 is at least ALS's.

    PYTHONPATH=src python benchmarks/bench_movielens.py [--data DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_notify.two_tower.baselines import BASELINES
from recsys_notify.two_tower.config import available_experiments, load_experiment
from recsys_notify.two_tower.data import prepare
from recsys_notify.two_tower.metrics import evaluate_scorer
from recsys_notify.two_tower.movielens import read_movielens, to_interactions
from recsys_notify.two_tower.train import fit

# Shipped configs re-pointed at the only embedding MovieLens has (genres + title), plus tuning that
# suits ~80k explicit ratings on a small shared CPU (larger batches, one thread).
ML_OVERRIDES = {"embedding_source": "content", "embedding_dim": 128, "hidden": [128], "out_dim": 32,
                "batch_size": 1024, "lr": 2e-3, "epochs": 15, "patience": 3, "threads": 1}
CONFIGS = available_experiments("configs/two_tower")
COLUMNS = ["auc", "ndcg_5", "ndcg_10", "mrr", "map", "cust_map_10", "recall_10", "full_ndcg_10", "recall_50",
           "coverage_10", "intra_list_diversity", "fixed_top10_share", "impressions", "skipped_no_positive"]


def fetch_ml100k(target: Path) -> Path:
    """Download the recbole wheel (no dependencies) and extract its ml-100k atomic files."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole", "-d", str(target)],
                   check=True, timeout=600)
    wheel = next(target.glob("recbole-*.whl"))
    out = target / "ml-100k"
    out.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for suffix in ("inter", "item", "user"):
            name = f"recbole/dataset_example/ml-100k/ml-100k.{suffix}"
            (out / f"ml-100k.{suffix}").write_bytes(zf.read(name))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="directory with ML-100K files (default: fetch from the recbole wheel)")
    parser.add_argument("--epochs", type=int, default=ML_OVERRIDES["epochs"])
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else fetch_ml100k(Path(tmp))
        ratings, items, _ = read_movielens(data)
    print(f"ML-100K: {len(ratings):,} ratings, {ratings.user_id.nunique()} users, {len(items)} items", flush=True)
    inter = to_interactions(ratings, items, dim=128)
    rows, preps = {}, None
    for name in args.configs:
        cfg = load_experiment(name, "configs/two_tower", {**ML_OVERRIDES, "epochs": args.epochs})
        t0 = time.perf_counter()
        prep = prepare(inter, cfg)
        preps = preps or prep
        result = fit(prep)
        rows[f"two_tower:{name}"] = {**result.metrics, "seconds": time.perf_counter() - t0}
        print(f"{name}: ndcg_10={result.metrics['ndcg_10']:.4f} best_epoch={result.best_epoch} "
              f"({rows[f'two_tower:{name}']['seconds']:.0f}s)", flush=True)
    assert preps is not None
    positives = inter.train[inter.train["label"] == 1]
    cand = np.sort(preps.candidates)
    vectors = preps.space.item_matrix[preps.space.item_index.get_indexer(cand)]
    for name, cls in BASELINES.items():
        t0 = time.perf_counter()
        model = cls(positives)
        rows[name] = {**evaluate_scorer(model.score_matrix, preps.valid, preps.seen, cand, vectors),
                      "seconds": time.perf_counter() - t0}
    table = pd.DataFrame(rows).T[COLUMNS + ["seconds"]]
    print(f"\nsplit: {preps.counts}")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    best = table.loc[[i for i in table.index if i.startswith("two_tower:")], "ndcg_10"].max()
    ratio = best / table.loc["als", "ndcg_10"]
    print(f"\nbest two-tower NDCG@10 / ALS NDCG@10 = {ratio:.3f} -> {'OK' if ratio >= 1 else 'BELOW ALS'}")


if __name__ == "__main__":
    main()
