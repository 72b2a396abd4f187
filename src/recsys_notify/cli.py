"""``recsys-notify``: the same step functions the DAGs call, from a shell.

Every pipeline step is a subcommand named after it (``pair-mining``, ``gem``, ``user-medoids``,
``global-medoids``, ``notifications``, ``two-tower``) taking ``--date`` (one day) or ``--start/--end``
(an inclusive range, run day by day) and one flag per run param: the step's config keys (empty =
configured value) and its run-only fields, e.g. ``pair-mining --date 2026-11-13 --window-days 3``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any, get_origin

from recsys_notify.core.config import ConfigError, Settings, load_settings, scalar
from recsys_notify.core.datasets import RAW
from recsys_notify.core.step import STEPS, StepSpec
from recsys_notify.core.storage import Storage, StorageError, as_date, date_range, storage_from_settings
from recsys_notify.core.tracking import TrackingUnavailableError

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

    cfg = generator_config(args.users, args.items, args.days, args.end or default_end(), args.seed,
                           buckets=settings.event_buckets)
    with tqdm(total=args.days, desc="generate", unit="day", file=sys.stderr) as bar:
        def progress(msg: str) -> None:
            bar.set_postfix_str(msg)
            bar.update(1)

        return generate(storage, cfg, progress)


def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=sorted(RAW))
    p.add_argument("path", help="Parquet file or directory to load")
    p.add_argument("--date", type=as_date, required=True)
    p.add_argument("--max-invalid-fraction", type=float, default=0.5,
                   help="refuse the partition when more than this fraction (0..1) of rows is invalid")


@command("ingest", "validate a raw Parquet file and write it as one partition (bad rows quarantined)", _ingest_args)
def _ingest(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    import pandas as pd

    from recsys_notify.core.contract import ingest

    frame = pd.read_parquet(args.path)
    return ingest(storage, args.dataset, args.date, frame, max_invalid_fraction=args.max_invalid_fraction,
                  buckets=settings.event_buckets)


def _partitions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset")


@command("partitions", "list the committed dates of a dataset", _partitions_args)
def _partitions(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    return [d.isoformat() for d in storage.dates(args.dataset)]


def _experiments_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["compare", "list"],
                   help="compare: tracker table from MLflow (runs of --date, or the newest); list: known configs")
    p.add_argument("--date", type=as_date, help="only runs validated on this day")


@command("experiments", "two-tower experiments: list the configs or compare their MLflow runs", _experiments_args)
def _experiments(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    from recsys_notify.two_tower.config import available_experiments
    from recsys_notify.two_tower.step import compare_table, format_table

    if args.action == "list":
        return available_experiments(settings.two_tower.configs_dir)
    print(format_table(compare_table(settings, args.date)))
    return None


def _refresh_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=as_date, required=True, help="first replayed day")
    p.add_argument("--end", type=as_date, required=True, help="last replayed day (inclusive)")
    p.add_argument("--every", default="1,3,7,14", help="policies to compare: refresh every N days (e.g. 1,3,7,14)")


@command("refresh-policy", "replay a date range per global-medoid refresh policy and recommend one (MLflow)",
         _refresh_policy_args)
def _refresh_policy(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
    import pandas as pd

    from recsys_notify.global_medoids.study import format_table, run

    try:
        every = [int(n) for n in args.every.split(",") if n.strip()]
    except ValueError:
        raise ConfigError(f"--every must be comma-separated whole numbers of days, got {args.every!r}") from None
    result = run(storage, settings, {"start": args.start, "end": args.end, "every": every})
    print(format_table(pd.DataFrame(result["table"])))
    print(f"\nrecommendation: {result['recommendation']}\nMLflow run: {result['mlflow_run_id']}")
    return None


# ----- one subcommand per pipeline step, its flags generated from the step's config and run-param models -----

def _step_args(spec: StepSpec) -> Callable[[argparse.ArgumentParser], None]:
    def configure(p: argparse.ArgumentParser) -> None:
        add_dates(p)
        section = Settings.model_fields[spec.section].annotation
        for model, what in ((section, "config default"), (spec.run_model(), "default")):
            for name, info in (model.model_fields.items() if model else ()):
                if name in spec.context_fields and name != "run_id":
                    continue
                many = get_origin(info.annotation) is list
                default = info.get_default(call_default_factory=True)
                p.add_argument(f"--{name.replace('_', '-')}", dest=f"param_{name}", metavar="VALUE",
                               nargs="+" if many else None, help=f"{info.description or name} ({what} {default!r})")
    return configure


def _step_handler(spec: StepSpec) -> Handler:
    def handler(args: argparse.Namespace, settings: Any, storage: Storage) -> Any:
        import getpass

        module = importlib.import_module(spec.module)
        params = {k.removeprefix("param_"): _parse(v) for k, v in vars(args).items()
                  if k.startswith("param_") and v is not None}
        if "requested_by" in spec.context_fields:
            params.setdefault("requested_by", getpass.getuser())
        if "run_id" in spec.context_fields:
            params.setdefault("run_id", f"cli-{uuid.uuid4().hex[:12]}")
        return for_each_day(args, lambda day: module.run(storage, settings, day, params).to_dict())
    return handler


def _parse(value: Any) -> Any:
    """A flag value as YAML (numbers, booleans, {objects}); lists element by element."""
    return [scalar(v) for v in value] if isinstance(value, list) else scalar(value)


for _spec in STEPS.values():
    command(_spec.name.replace("_", "-"), f"run the {_spec.name} step (the {_spec.name} DAG's work) for each date",
            _step_args(_spec))(_step_handler(_spec))


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
    except (ConfigError, StorageError, TrackingUnavailableError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # missing input, read-only data root, disk full: name the path, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not type(exc).__module__.startswith("mlflow"):  # a half-alive MLflow server fails writes with 500s
            raise
        print(f"error: MLflow tracking store failed: {exc}. Outputs already written are kept; retry once the "
              "store is healthy.", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
