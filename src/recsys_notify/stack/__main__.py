"""``python -m recsys_notify.stack up|down|status|env|standalone`` (``make stack``, ``make stack-down``)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from recsys_notify.stack.config import StackConfig, StackConfigError


def _up(config: StackConfig, timeout: float) -> None:
    from recsys_notify.stack.services import Stack

    started = time.monotonic()
    Stack(config, lambda msg: print(f"[stack] {msg}", flush=True)).up(timeout)
    v = config.values
    print(f"[stack] up in {time.monotonic() - started:.0f}s (state, logs and pid files in {config.root})\n"
          f"  Airflow UI/API  {config.url('AIRFLOW_PORT')}  (admin / AIRFLOW_ADMIN_PASSWORD from the env file)\n"
          f"  MLflow          {config.url('MLFLOW_PORT')}\n"
          f"  S3 (moto)       {config.url('S3_PORT')}  data s3://{v['S3_DATA_BUCKET']}/recsys, "
          f"artifacts s3://{v['S3_ARTIFACT_BUCKET']}\n"
          f"  PostgreSQL      127.0.0.1:{v['POSTGRES_PORT']}  Redis 127.0.0.1:{v['REDIS_PORT']}\n"
          "Load data:  eval \"$(.venv/bin/python -m recsys_notify.stack env)\" && recsys-notify generate\n"
          "Stop:       make stack-down", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys_notify.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start every service and wait until each answers")
    up.add_argument("--timeout", type=float, default=600, help="seconds to wait for the whole stack")
    sub.add_parser("down", help="stop what `up` started (saves the S3 buckets to STACK_DIR/s3)")
    sub.add_parser("status", help="the recorded services and whether each still runs")
    sub.add_parser("env", help="print `export` lines that point airflow/recsys-notify commands at the stack")
    sub.add_parser("standalone", help="airflow standalone on ./data with PATH, ports and sizing set")
    args = parser.parse_args(argv)

    if args.command == "standalone":
        from recsys_notify.stack.standalone import run

        return run()
    try:
        config = StackConfig.load(create=args.command == "up")
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "up":
        from recsys_notify.stack.services import StackError

        try:
            _up(config, args.timeout)
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    elif args.command == "env":
        base = config.base_env()
        for key, value in sorted(config.airflow_env().items()):
            if key == "PATH" or base.get(key) != value:
                print(f"export {key}={shlex.quote(value)}")
    else:
        from recsys_notify.stack.services import Stack

        stack = Stack(config)
        if args.command == "down":
            for name, state in stack.down():
                print(f"[stack] {name}: {state}")
        else:
            for name, pid, alive in stack.status():
                print(f"{name:14} pid {pid:<8} {'running' if alive else 'NOT RUNNING'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
