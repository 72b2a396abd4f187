"""``make airflow`` from a fresh checkout: ``airflow standalone`` starts (airflow found on PATH), answers
on the chosen port, and a SIGTERM stops it together with every component it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.airflow_stack import REPO, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _group(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


def test_standalone_serves_the_api_and_stops_everything_on_sigterm(tmp_path):
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RECSYS"))}
    # PATH without the venv: the command must put it there itself.
    env = base | {"PATH": "/usr/bin:/bin", "AIRFLOW_PORT": str(port), "AIRFLOW_HOME": str(tmp_path / "home"),
                  "RECSYS__DATA_ROOT": str(tmp_path / "data"),
                  "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                  "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    log = open(tmp_path / "standalone.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "recsys_notify.stack", "standalone"], env=env, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    pgid = None
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, (tmp_path / "standalone.log").read_text()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v2/version", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "standalone.log").read_text()[-4000:]
            time.sleep(2)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        pgid = int(children[0])
        assert len(_group(pgid)) >= 4  # standalone, scheduler, dag-processor, api-server, triggerer, ...
        password = json.loads((tmp_path / "home" / "simple_auth_manager_passwords.json.generated").read_text())
        token = httpx.post(f"http://127.0.0.1:{port}/auth/token", timeout=30,
                           json={"username": "admin", "password": password["admin"]})
        assert token.status_code in (200, 201), token.text
        text = (tmp_path / "standalone.log").read_text()
        assert "FileNotFoundError" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        log.close()
    assert pgid is not None and _group(pgid) == [], "standalone left processes behind"
