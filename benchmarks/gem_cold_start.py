"""Cold-start quality of GEM vs raw content embeddings on a fresh synthetic world.

By default generates a world and writes its ``pairs`` partition with the test stand-in from
``tests/test_gem.py`` (a per-client self-join of positives); with ``--data-root`` it uses a data
root where ``recsys-notify generate`` and ``recsys-notify pair-mining --date 2026-11-14`` already ran.
Trains GEM with each requested objective and prints the held-out (cold-start) metrics next to
content's, with the wall time of each run.

    PYTHONPATH=src:. python benchmarks/gem_cold_start.py --objectives pairs als
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date

from recsys_notify.core.config import load_settings
from recsys_notify.core.storage import Storage
from recsys_notify.synthetic import GeneratorConfig, generate

END = date(2026, 11, 14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objectives", nargs="+", default=["pairs", "als"], choices=["pairs", "als"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--holdout-fraction", type=float, default=0.3)
    parser.add_argument("--data-root", help="existing root with generated data and mined pairs for 2026-11-14")
    args = parser.parse_args()

    root = args.data_root or tempfile.mkdtemp(prefix="gem-bench-")
    settings = load_settings(environ={**os.environ, "RECSYS__DATA_ROOT": root})
    storage = Storage(root)
    if args.data_root:
        source = f"mined pairs under {root}"
    else:
        from tests.test_gem import _test_pairs

        generate(storage, GeneratorConfig(users=args.users, items=args.items, seed=args.seed, end=END))
        storage.write("pairs", END, _test_pairs(storage, END))
        source = f"a fresh {args.users}-user / {args.items}-item world (seed {args.seed}) and the test stand-in pairs"
    from recsys_notify.gem import step as gem

    k = settings.gem.eval_k
    print(f"data: {source}")
    print(f"| objective | vectors | recall@{k} | topic precision@{k} | style precision@{k} | train s |")
    print("|---|---|---|---|---|---|")
    for objective in args.objectives:
        start = time.perf_counter()
        out = gem.run(storage, settings, END, {"objective": objective, "epochs": args.epochs,
                                               "holdout_fraction": args.holdout_fraction,
                                               "experiment": "gem_benchmark"}).summary
        took = time.perf_counter() - start
        for name in ("content", "gem", "content_trimmed", "gem_trimmed"):
            print(f"| {objective} | {name} | {out[f'{name}_recall_at_{k}']:.3f} | "
                  f"{out[f'{name}_topic_precision_at_{k}']:.3f} | {out[f'{name}_style_precision_at_{k}']:.3f} | "
                  f"{took:.0f} |")
        print(f"<!-- {objective}: eval items {out['eval_items']}, losses {out['losses'][0]} -> {out['losses'][-1]} -->")


if __name__ == "__main__":
    main()
