"""``make airflow``: ``airflow standalone`` on this checkout's DAGs and ``./data`` (what ``make demo`` fills).

Standalone starts its components as ``airflow ...`` from PATH, so the venv's bin/ goes first on PATH;
ports, worker counts and SQLite's lock wait are set here instead of Airflow's large-machine defaults.
It runs in its own process group: Ctrl-C or SIGTERM stops it and then everything it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from recsys_notify.stack.config import HOST, REPO, cpu_sizing

# pysqlite waits 5 s for a lock by default; the scheduler, dag-processor and API (e.g. creating a
# backfill) write concurrently, and a 5 s wait surfaced as HTTP 503 "database is locked".
SQLITE_CONNECT_ARGS: dict[str, Any] = {"timeout": 60}
SQLITE_ASYNC_CONNECT_ARGS: dict[str, Any] = {"timeout": 60}


def standalone_env(environ: dict[str, str]) -> dict[str, str]:
    """Environment for ``airflow standalone``; exported ``AIRFLOW_HOME``, ``AIRFLOW__*``, ``RECSYS__*`` win."""
    home = Path(environ.get("AIRFLOW_HOME") or REPO / ".airflow")
    port = environ.get("AIRFLOW_PORT", "8080")
    url = f"http://{HOST}:{port}"
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), environ.get("PATH", "")]),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DEFAULT_TIMEZONE": "utc",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{__name__}.SQLITE_CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": f"{__name__}.SQLITE_ASYNC_CONNECT_ARGS",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": port,
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "RECSYS__DATA_ROOT": str(REPO / "data"),
        **cpu_sizing(os.cpu_count() or 1),
    }
    passed = {k: v for k, v in environ.items() if k.startswith(("AIRFLOW__", "RECSYS__"))}
    return environ | env | passed


def run(environ: dict[str, str] | None = None, grace: float = 30) -> int:
    """Run standalone until it exits or we are told to stop; never leave its components behind."""
    env = standalone_env(dict(os.environ if environ is None else environ))
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    print(f"Airflow UI: {env['AIRFLOW__API__BASE_URL']} (login admin, password in "
          f"{env['AIRFLOW_HOME']}/simple_auth_manager_passwords.json.generated); dates are UTC", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, cwd=REPO,
                            start_new_session=True)

    def stop(signum: int, _frame: Any) -> None:
        os.kill(proc.pid, signal.SIGINT)  # standalone's own shutdown: it stops each component

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = proc.wait()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.5)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    return code


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
