"""``recsys-notify``: the same step functions the DAGs call, from a shell.

Each subcommand takes ``--date`` (one day) or ``--start/--end`` (an inclusive range, run day by day).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from recsys_notify.config import ConfigError, load_settings
from recsys_notify.storage import Storage, StorageError, as_date, date_range, storage_from_settings

Handler = Callable[[argparse.Namespace, Any, Storage], Any]
COMMANDS: dict[str, tuple[str, Handler, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand handler ``(args, settings, storage) -> result``."""

    def wrap(fn: Handler) -> Handler:
        COMMANDS[name] = (help_text, fn, configure)
        return fn

    return wrap


def add_dates(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=as_date, help="day to process (YYYY-MM-DD)")
    p.add_argument("--start", type=as_date, help="first day of a range (inclusive)")
    p.add_argument("--end", type=as_date, help="last day of a range (inclusive)")


def days_of(args: argparse.Namespace) -> list[date]:
    if args.date and (args.start or args.end):
        raise SystemExit("give either --date or --start/--end, not both")
    if args.date:
        return [args.date]
    if args.start and args.end:
        return date_range(args.start, args.end)
    raise SystemExit("--date or --start and --end are required")


def for_each_day(args: argparse.Namespace, step: Callable[[date], Any]) -> list[Any]:
    """Run ``step`` for every requested day with a progress bar."""
    from tqdm import tqdm

    days = days_of(args)
    return [step(d) for d in tqdm(days, desc=args.command, unit="day", disable=len(days) == 1, file=sys.stderr)]


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=5000)
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--end", type=as_date, help="last generated day (default: yesterday, UTC)")
    p.add_argument("--seed", type=int, default=0)


@command("generate", "write synthetic events/items/users and their ground truth", _generate_args)
def _generate(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from tqdm import tqdm

    from recsys_notify.synthetic import default_end, generate, generator_config

    cfg = generator_config(args.users, args.items, args.days, args.end or default_end(), args.seed)
    with tqdm(total=args.days, desc="generate", unit="day", file=sys.stderr) as bar:
        def progress(msg: str) -> None:
            bar.set_postfix_str(msg)
            bar.update(1)

        return generate(storage, cfg, progress)


def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=["events", "items", "users"])
    p.add_argument("path", help="Parquet file or directory to load")
    p.add_argument("--date", type=as_date, required=True)
    p.add_argument("--max-invalid-fraction", type=float, default=0.5)


@command("ingest", "validate a raw Parquet file and write it as one partition (bad rows quarantined)", _ingest_args)
def _ingest(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    import pandas as pd

    from recsys_notify.contract import ingest

    frame = pd.read_parquet(args.path)
    return ingest(storage, args.dataset, args.date, frame, max_invalid_fraction=args.max_invalid_fraction)


def _partitions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset")


@command("partitions", "list the committed dates of a dataset", _partitions_args)
def _partitions(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    return [d.isoformat() for d in storage.dates(args.dataset)]


def _mine_pairs_args(p: argparse.ArgumentParser) -> None:
    add_dates(p)
    p.add_argument("--window-days", type=int, help="override pair_mining.window_days")
    p.add_argument("--min-clients", type=int, help="override pair_mining.min_clients")
    p.add_argument("--max-positives-per-client", type=int, help="override pair_mining.max_positives_per_client")
    p.add_argument("--engine", choices=["duckdb", "spark"], help="override pair_mining.engine")


@command("mine-pairs", "mine positive/negative item pairs (pair_interactions, pair_items, pairs)", _mine_pairs_args)
def _mine_pairs(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from recsys_notify.config import with_overrides
    from recsys_notify.pair_mining import mine_pairs

    settings = with_overrides(settings, "pair_mining", window_days=args.window_days, min_clients=args.min_clients,
                              max_positives_per_client=args.max_positives_per_client, engine=args.engine)
    return for_each_day(args, lambda day: mine_pairs(storage, day, settings))


def _experiments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["sweep", "compare", "list"],
                   help="sweep: train + gate experiments; compare: tracker table from MLflow; list: known configs")
    add_dates(p)
    p.add_argument("--experiments", nargs="+", help="experiment names (default: every config)")
    p.add_argument("--epochs", type=int, help="override the configs' epochs (quick sweeps)")


@command("experiments", "two-tower experiment sweep / MLflow comparison table", _experiments_args)
def _experiments(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from recsys_notify.two_tower.config import available_experiments
    from recsys_notify.two_tower.retrain import compare_table, format_table, retrain

    if args.action == "list":
        return available_experiments(settings.two_tower.configs_dir)
    if args.action == "compare":
        print(format_table(compare_table(settings, args.date)))
        return None
    overrides = {"epochs": args.epochs} if args.epochs else None
    return for_each_day(args, lambda d: retrain(storage, d, settings, args.experiments, overrides))


def _train_two_tower_args(p: argparse.ArgumentParser) -> None:
    add_dates(p)
    p.add_argument("--experiment", required=True, help="experiment config name under two_tower.configs_dir")
    p.add_argument("--epochs", type=int, help="override the config's epochs")


@command("train-two-tower", "train one two-tower experiment validated on --date, register and gate it",
         _train_two_tower_args)
def _train_two_tower(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from recsys_notify.two_tower.retrain import retrain

    overrides = {"epochs": args.epochs} if args.epochs else None
    return for_each_day(args, lambda d: retrain(storage, d, settings, [args.experiment], overrides))


def _train_gem_args(p: argparse.ArgumentParser) -> None:
    add_dates(p)
    p.add_argument("--objective", choices=["pairs", "als"], help="default: gem.objective from config")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--out-dim", type=int)
    p.add_argument("--bucket-balance", type=float)
    p.add_argument("--negative-weight", type=float)
    p.add_argument("--holdout-fraction", type=float)
    p.add_argument("--seed", type=int)


@command("train-gem", "train the generic embedding model and write gem_embeddings (after mine-pairs)", _train_gem_args)
def _train_gem(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from recsys_notify.gem.training import train_gem

    names = ["objective", "epochs", "batch_size", "learning_rate", "out_dim", "bucket_balance", "negative_weight",
             "holdout_fraction", "seed"]
    overrides = {n: getattr(args, n) for n in names}
    return for_each_day(args, lambda day: train_gem(storage, day, settings, **overrides))


def _notify_args(p: argparse.ArgumentParser) -> None:
    add_dates(p)
    p.add_argument("--holdout-percent", type=float, help="override notifications.holdout_percent")
    p.add_argument("--k-neighbours", type=int, help="override notifications.k_neighbours")
    p.add_argument("--min-candidates", type=int, help="override notifications.min_candidates")
    p.add_argument("--no-medoid-policy", choices=["popular", "none"], help="override notifications.no_medoid_policy")
    p.add_argument("--no-short-term", action="store_true", help="do not seed with yesterday's positive items")
    p.add_argument("--no-champion", action="store_true", help="rank with the transparent scorer only")
    p.add_argument("--no-eval", action="store_true", help="skip next-day evaluation and MLflow logging")


@command("notify", "choose, render and write the day's notifications (outbox + delivery log), then evaluate",
         _notify_args)
def _notify(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from recsys_notify.notify import notify
    from recsys_notify.notify.evaluation import evaluate_and_track

    params = {k: v for k, v in {"holdout_percent": args.holdout_percent, "k_neighbours": args.k_neighbours,
                                "min_candidates": args.min_candidates, "no_medoid_policy": args.no_medoid_policy,
                                "short_term_enabled": False if args.no_short_term else None,
                                "use_champion": False if args.no_champion else None}.items() if v is not None}

    def one_day(day: date) -> dict[str, Any]:
        stats = notify(storage, settings, day, params)
        result = {k: v for k, v in stats.items() if k != "lineage"}
        if not args.no_eval:
            result["evaluation"] = evaluate_and_track(storage, settings, day, params)
        return result

    return for_each_day(args, one_day)


def _user_medoids_args(p: argparse.ArgumentParser) -> None:
    add_dates(p)
    p.add_argument("--algorithm", choices=["dbscan", "hdbscan", "pinnersage"], help="default: user_medoids.algorithm")
    p.add_argument("--seed", type=int, help="sampling seed (default: user_medoids.seed)")
    p.add_argument("--shard", type=int, help="compute only this shard (then run with --combine)")
    p.add_argument("--combine", action="store_true", help="only commit user_medoids from existing shard outputs")
    p.add_argument("--no-track", action="store_true", help="skip the MLflow run")


@command("user-medoids", "refresh user medoids (all shards then combine, or one step)", _user_medoids_args)
def _user_medoids(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from recsys_notify import user_medoids as um

    def step(day: date) -> Any:
        if args.shard is not None:
            return um.run_shard(storage, settings, day, args.shard, None, args.algorithm, args.seed)
        if args.combine:
            return um.combine(storage, settings, day, track=not args.no_track)
        return um.refresh(storage, settings, day, args.algorithm, args.seed, track=not args.no_track)

    return for_each_day(args, step)


def _global_medoids_args(p: argparse.ArgumentParser) -> None:
    add_dates(p)
    p.add_argument("--replace", action="append", default=[], metavar="CLUSTER:ITEM[:LANG]",
                   help="pin ITEM as representative of CLUSTER (optionally for language LANG); repeatable")
    p.add_argument("--block", action="append", default=[], type=int, metavar="ITEM", help="block an item; repeatable")
    p.add_argument("--revoke", action="append", default=[], metavar="OVERRIDE_ID", help="end an override; repeatable")
    p.add_argument("--reason", default="", help="why (required with overrides)")
    p.add_argument("--expires", help="last day the overrides apply (YYYY-MM-DD)")
    p.add_argument("--requested-by", default=None, help="who asks (default: $USER)")
    p.add_argument("--check-only", action="store_true", help="validate the override options and stop")
    p.add_argument("--run-id", help="audit run id; reuse a failed invocation's id to retry it without "
                                    "applying its overrides twice (default: a new id)")
    p.add_argument("--no-track", action="store_true", help="skip the MLflow run")


@command("global-medoids", "refresh global medoids, templates and apply ops overrides", _global_medoids_args)
def _global_medoids(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    import getpass

    from recsys_notify import global_medoids as gm
    from recsys_notify.overrides import parse_request

    replace = []
    for spec in args.replace:
        parts = spec.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"--replace {spec!r}: expected CLUSTER:ITEM or CLUSTER:ITEM:LANG")
        replace.append({"cluster_id": parts[0], "item_id": parts[1], **({"language": parts[2]} if len(parts) == 3 else {})})
    request = parse_request({"replace_representatives": replace, "block_items": args.block,
                             "revoke_overrides": args.revoke, "reason": args.reason, "expires": args.expires,
                             "requested_by": args.requested_by}, default_user=getpass.getuser())
    if args.check_only:
        return for_each_day(args, lambda day: gm.check_request(storage, settings, day, request))
    run_id = args.run_id or f"cli-{uuid.uuid4().hex[:12]}"
    return for_each_day(args, lambda day: gm.refresh(storage, settings, day, request, run_id=run_id,
                                                     track=not args.no_track))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys-notify", description=__doc__)
    parser.add_argument("--config", help="YAML config file (default: $RECSYS_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, configure) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        storage = storage_from_settings(settings)
        result = COMMANDS[args.command][1](args, settings, storage)
    except (ConfigError, StorageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
