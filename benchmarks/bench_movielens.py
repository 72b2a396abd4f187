"""MovieLens-100K (and the synthetic product world) on the standard full-ranking protocols.

One table per protocol: the history two-tower and five baselines (most-popular, ItemKNN, ALS, BPR,
EASE), every model tuned on valid with a small recorded grid (epochs too), every figure on test. The
random 8:1:1 protocol is averaged over 3 split seeds (mean ± std) next to RecBole's published BPR row.
Also printed: what each split dropped or left cold, the selected grid points, training examples/s and
full-catalogue scoring (user x item pairs/s).

Fetches ML-100K from the ``recbole`` 1.2.1 wheel (``pip download --no-deps``; the wheel ships RecBole's
atomic files under recbole/dataset_example/ml-100k), or reads ``--data DIR`` (u.data/u.item/u.user or
the atomic files).

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_movielens.py [--quick] [--data DIR]

``--quick``: one split seed, the small grids, no synthetic world (153 s on a shared 2-core CPU; the full
run took 604 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_notify.two_tower.config import available_experiments, identical_groups, load_experiment
from recsys_notify.two_tower.history_model import HistoryConfig, fit_history
from recsys_notify.two_tower.movielens import item_embeddings, read_movielens
from recsys_notify.two_tower.protocols import PROTOCOLS, Split, evaluate, make_split
from recsys_notify.two_tower.ranking_baselines import GRIDS, QUICK_GRIDS, tune

# RecBole's published BPR on ml-100k (random 8:1:1 per user, full ranking; RecBole's ml-100k results page)
RECBOLE_BPR = {"ndcg_10": 0.2768, "recall_10": 0.2368}
HISTORY_GRID = {"neg_weight": [0.3, 0.6, 1.0]}
COLUMNS = {"ndcg_10": "NDCG@10", "recall_10": "Recall@10", "mrr_10": "MRR@10", "hit_10": "Hit@10",
           "coverage_10": "coverage", "train_s": "train s", "ndcg_20": "NDCG@20", "recall_20": "Recall@20",
           "precision_10": "P@10", "intra_list_diversity_10": "ILD", "train_examples_per_s": "train ex/s",
           "score_pairs_per_s": "score pairs/s"}


def fetch_ml100k(target: Path) -> Path:
    """Download the recbole wheel (no dependencies) and extract its ml-100k atomic files."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "recbole==1.2.1",
                    "-d", str(target)], check=True, timeout=600)
    wheel = next(target.glob("recbole-*.whl"))
    out = target / "ml-100k"
    out.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for suffix in ("inter", "item", "user"):
            name = f"recbole/dataset_example/ml-100k/ml-100k.{suffix}"
            (out / f"ml-100k.{suffix}").write_bytes(zf.read(name))
    return out


def _timed_test(scorer, split: Split, vectors: np.ndarray | None, model: str) -> dict[str, float]:
    t0 = time.perf_counter()
    out = evaluate(scorer, split, "test", item_vectors=vectors, model=model)
    out["score_pairs_per_s"] = out["evaluated_users"] * split.shape[1] / (time.perf_counter() - t0)
    return out


def run_models(split: Split, vectors: np.ndarray | None, features: np.ndarray | None, quick: bool,
               seed: int) -> dict[str, dict[str, float]]:
    """Every model tuned on valid; test metrics plus train seconds and throughput."""
    rows: dict[str, dict[str, float]] = {}
    grids = QUICK_GRIDS if quick else GRIDS
    for name in grids:
        fixed = {"seed": seed} if name in ("als", "bpr") else {}
        t0 = time.perf_counter()
        tuned = tune(name, split, grids[name], **fixed)
        iterations = tuned.params.get("iterations", 15) if name in ("als", "bpr") else 1
        rows[name] = {**_timed_test(tuned.scorer, split, vectors, name), "train_s": tuned.train_seconds,
                      "train_examples_per_s": split.train.nnz * iterations / max(tuned.train_seconds, 1e-9),
                      "tune_s": time.perf_counter() - t0, "params": str(tuned.params)}
        print(f"  {name}: valid ndcg_10={tuned.valid['ndcg_10']:.4f} {tuned.params} "
              f"test ndcg_10={rows[name]['ndcg_10']:.4f}", flush=True)
    base = HistoryConfig(seed=seed)
    best = None
    for point in [{}] if quick else [dict(neg_weight=v) for v in HISTORY_GRID["neg_weight"]]:
        result = fit_history(split, replace(base, **point), features)
        if best is None or result.valid["ndcg_10"] > best[1].valid["ndcg_10"]:
            best = (point, result)
    assert best is not None
    point, result = best
    rows["history_two_tower"] = {**_timed_test(result.scorer, split, vectors, "history_two_tower"),
                                 "train_s": result.train_seconds,
                                 "train_examples_per_s": result.examples / result.train_seconds,
                                 "params": str({**point, "best_epoch": result.best_epoch})}
    print(f"  history_two_tower: valid ndcg_10={result.valid['ndcg_10']:.4f} epoch {result.best_epoch} "
          f"test ndcg_10={rows['history_two_tower']['ndcg_10']:.4f}", flush=True)
    return rows


def table(runs: list[dict[str, dict[str, float]]], reference: dict[str, float] | None = None) -> str:
    """Mean (± std over runs when more than one) per model and metric, as a markdown table."""
    models = list(runs[0])
    lines = ["| model | " + " | ".join(COLUMNS.values()) + " | selected |",
             "|---" * (len(COLUMNS) + 2) + "|"]
    for m in models:
        cells = []
        for key in COLUMNS:
            values = np.array([r[m].get(key, np.nan) for r in runs], dtype=float)
            fmt = "{:.0f}" if key.endswith("_per_s") else "{:.1f}" if key == "train_s" else "{:.4f}"
            cell = fmt.format(values.mean())
            if len(values) > 1 and key not in ("train_s",) and not key.endswith("_per_s"):
                cell += f" ± {values.std():.4f}"
            cells.append(cell)
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {runs[0][m]['params']} |")
    if reference:
        cells = [f"{reference[k]:.4f}" if k in reference else "–" for k in COLUMNS]
        lines.append("| RecBole BPR (published) | " + " | ".join(cells) + " | recbole.io ml-100k |")
    return "\n".join(lines)


def shipped_config_twins() -> None:
    """MovieLens has no gem embeddings, so the shipped gem configs run on content: say which coincide."""
    names = available_experiments("configs/two_tower")
    configs = [load_experiment(n, "configs/two_tower", {"embedding_source": "content"}) for n in names]
    groups = identical_groups(configs)
    distinct = len(names) - sum(len(g) - 1 for g in groups)
    print(f"shipped configs on MovieLens (embedding_source content): {distinct} distinct models of {len(names)}; "
          f"identical: {groups}", flush=True)


def movielens(data: Path, quick: bool) -> None:
    ratings, items, _ = read_movielens(data)
    items = items.sort_values("item_id").reset_index(drop=True)
    print(f"ML-100K: {len(ratings):,} ratings, {ratings.user_id.nunique()} users, {len(items)} items "
          "(every rating an implicit positive)", flush=True)
    shipped_config_twins()
    vectors = item_embeddings(items, 64)
    for protocol in PROTOCOLS:
        seeds = [0] if quick or protocol != "random" else [0, 1, 2]
        runs = []
        for seed in seeds:
            split = make_split(ratings, items["item_id"].to_numpy(), protocol, seed=seed)
            print(f"\n{protocol} seed {seed}: {split.report}", flush=True)
            runs.append(run_models(split, vectors, vectors, quick, seed))
        print(f"\n### ML-100K, protocol {protocol} ({len(seeds)} seed(s), test split)\n")
        print(table(runs, RECBOLE_BPR if protocol == "random" else None), flush=True)


def synthetic(quick: bool) -> None:
    """The product world (600 users, 2,000 items, 14 days; the test world): global time split on events."""
    from recsys_notify.synthetic import build_world, events_for_day, generator_config

    cfg = generator_config(600, 2000, 14, "2026-11-14", seed=7)
    world = build_world(cfg)
    events = pd.concat([b for d in range(cfg.days) for b in events_for_day(cfg, world, d)], ignore_index=True)
    positive = events[events["liked"] | events["shared"] | (events["watch_time_s"] > 0.8 * events["duration_s"])]
    vectors = np.stack(world.items["embedding"].to_numpy()).astype(np.float32)
    split = make_split(positive, world.items["item_id"].to_numpy(), "global_time")
    print(f"\nsynthetic world: {len(events):,} events, {len(positive):,} positives; {split.report}", flush=True)
    rows = run_models(split, vectors, vectors[:, :64], quick, 0)
    print("\n### synthetic world, global time split (test split)\n")
    print(table([rows]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="directory with ML-100K files (default: fetch from the recbole wheel)")
    parser.add_argument("--quick", action="store_true", help="one seed, small grids, no synthetic world")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else fetch_ml100k(Path(tmp))
        movielens(data, args.quick)
    if not args.quick:
        synthetic(args.quick)
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
