"""Pid files that stop exactly what the stack started.

Each service runs in its own session (process group) with its output in ``logs/NAME.log``; its pid
file records the pid *and* the kernel's start time of that process, so a pid reused by an unrelated
process after a crash is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Service:
    name: str
    pid: int
    started: int

    def alive(self) -> bool:
        """True while the recorded process (same pid, same start time) runs and is not a zombie."""
        if start_time(self.pid) != self.started:
            return False
        return Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


class Procs:
    def __init__(self, root: Path) -> None:
        self.pids = root / "pids"
        self.logs = root / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, user: str | None = None) -> Service:
        """Start ``cmd`` detached in its own session, output appended to its log, and record its pid file."""
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.running(name):
            raise RuntimeError(f"{name} is already running (pid file {self.pids / name}.pid)")
        with open(self.log(name), "ab") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, user=user,
                                    group=user, extra_groups=[] if user else None)
        started = start_time(proc.pid)
        if started is None:
            raise RuntimeError(f"{name} exited at once: {self.tail(name)}")
        service = Service(name, proc.pid, started)
        (self.pids / f"{name}.pid").write_text(json.dumps({"pid": proc.pid, "started": started, "cmd": cmd[:3]}))
        return service

    def recorded(self) -> list[Service]:
        """Every service with a pid file, oldest first."""
        out = []
        for path in self.pids.glob("*.pid") if self.pids.is_dir() else []:
            info = json.loads(path.read_text())
            out.append(Service(path.stem, int(info["pid"]), int(info["started"])))
        return sorted(out, key=lambda s: s.started)

    def running(self, name: str) -> Service | None:
        return next((s for s in self.recorded() if s.name == name and s.alive()), None)

    def stop(self, service: Service, sig: signal.Signals = signal.SIGTERM, grace: float = 30) -> str:
        """Signal the service's process group, SIGKILL it after ``grace`` seconds; drop its pid file."""
        state = "not running"
        if service.alive():
            state = "stopped"
            os.killpg(service.pid, sig)
            deadline = time.monotonic() + grace
            while service.alive() and time.monotonic() < deadline:
                time.sleep(0.2)
            if service.alive():
                state = "killed"
            _kill_group(service.pid)
        (self.pids / f"{service.name}.pid").unlink(missing_ok=True)
        return state

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _kill_group(pgid: int) -> None:
    """SIGKILL whatever is left in the session's process group (e.g. task processes of a worker)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
