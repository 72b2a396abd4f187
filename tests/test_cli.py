"""``recsys-notify`` CLI: generate, ingest, partitions, and exit code 2 with a readable error."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date

import numpy as np
import pandas as pd
import pytest

from recsys_notify.cli import add_dates, build_parser, days_of, main
from recsys_notify.core.storage import Storage


def run_cli(capsys, *argv: str) -> tuple[int, object, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_generate_then_partitions(settings_env, tmp_path, capsys):
    code, counts, _ = run_cli(capsys, "generate", "--users", "200", "--items", "300", "--days", "3",
                              "--end", "2026-11-14", "--seed", "5")
    assert code == 0
    store = Storage(str(tmp_path / "data"))
    assert counts["users"] == 200 and counts["items"] == 300 and counts["quarantined"] == 0
    assert counts["events"] == sum(store.manifest("events", d)["rows"] for d in store.dates("events")) > 0
    code, listed, _ = run_cli(capsys, "partitions", "events")
    assert code == 0 and listed == ["2026-11-12", "2026-11-13", "2026-11-14"]
    assert store.dates("truth_users") == [date(2026, 11, 12)] and len(store.dates("truth_items")) == 3


def test_ingest_quarantines_and_reports(settings_env, tmp_path, capsys):
    run_cli(capsys, "generate", "--users", "100", "--items", "200", "--days", "2", "--end", "2026-11-14")
    store = Storage(str(tmp_path / "data"))
    raw = store.read("events", "2026-11-14").drop(columns="completion")
    raw.loc[0, "item_id"] = 42  # not an item
    raw.loc[1, "watch_time_s"] = -3.0
    path = tmp_path / "raw.parquet"
    raw.to_parquet(path)
    code, stats, _ = run_cli(capsys, "ingest", "events", str(path), "--date", "2026-11-14")
    assert code == 0
    assert stats == {"rows": len(raw) - 2, "quarantined": 2,
                     "reasons": {"negative watch_time_s": 1, "unknown item_id": 1}}
    assert store.read("events_quarantine", "2026-11-14")["reason"].tolist() == ["unknown item_id",
                                                                                "negative watch_time_s"]


def test_contract_and_storage_errors_exit_2(settings_env, tmp_path, capsys):
    path = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": np.arange(3), "language": ["en"] * 3}).to_parquet(path)
    code, _, err = run_cli(capsys, "ingest", "users", str(path), "--date", "2026-11-14")
    assert code == 2 and err.strip() == "error: users: missing column(s) signup_ts (3 rows rejected)"
    events = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [1]}).to_parquet(events)
    code, _, err = run_cli(capsys, "ingest", "events", str(events), "--date", "2026-11-14")
    assert code == 2 and "error: items has no partition on or before 2026-11-14: run `recsys-notify generate`" in err


def test_bad_generator_size_exits_2(settings_env, capsys):
    code, _, err = run_cli(capsys, "generate", "--users", "10", "--items", "50")
    assert code == 2 and err.strip() == "error: items must be at least 128 (the embedding PCA needs that many), got 50"


def test_bad_config_exits_2_in_a_real_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS")}
    env.update(RECSYS__DATA_ROOT=str(tmp_path / "data"), RECSYS__GLOBAL_MEDOIDS__K="1",
               PYTHONPATH=os.pathsep.join(["src", env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "recsys_notify.cli", "partitions", "events"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: invalid config: global_medoids.k: Input should be greater than or equal to 2"


def test_date_arguments():
    assert days_of(_dates("--date", "2026-11-02")) == [date(2026, 11, 2)]
    assert days_of(_dates("--start", "2026-11-01", "--end", "2026-11-03")) == [
        date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)]
    with pytest.raises(SystemExit, match="give either --date or --start/--end, not both"):
        days_of(_dates("--date", "2026-11-02", "--start", "2026-11-01"))
    with pytest.raises(SystemExit, match="--date or --start and --end are required"):
        days_of(_dates("--start", "2026-11-01"))


def _dates(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dates(parser)
    return parser.parse_args(list(argv))


def test_every_subcommand_has_help():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"generate", "ingest", "partitions"} <= set(subcommands.choices)
    assert all(subcommands.choices[name].format_help() for name in subcommands.choices)
