"""Run ``python -m ringrt_launcher`` (ringrun) as a subprocess and clean up whatever it leaves.

ringrun starts in its own session and its workers in sessions of their own, so the cleanup
kills ringrun's group *and* every pid the test workers recorded (``scripts/_pids.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests import world
from tests.launcher.scripts._pids import PID_DIR_VAR

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def script(name: str) -> str:
    return str(SCRIPTS / name)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    def __str__(self) -> str:
        return (f"ringrun exited {self.returncode} after {self.elapsed:.1f} s\n"
                f"--- stdout:\n{self.stdout[-4000:]}\n--- stderr:\n{self.stderr[-4000:]}")


class Ringrun:
    """One ringrun process. Use as a context manager: leaving it kills everything left."""

    def __init__(self, *args: str, env: dict | None = None, drop_env: tuple = ()):
        self.pid_dir = tempfile.mkdtemp(prefix="rrl-", dir="/tmp")
        full_env = dict(os.environ, **(env or {}))
        full_env[PID_DIR_VAR] = self.pid_dir
        for name in drop_env:
            full_env.pop(name, None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ringrt_launcher", *args], cwd=REPO, env=full_env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True)

    def __enter__(self) -> Ringrun:
        return self

    def __exit__(self, *exc) -> None:
        self.kill_all()

    def wait(self, timeout: float) -> Result:
        """Wait for ringrun to exit (raises subprocess.TimeoutExpired after ``timeout``)."""
        out, err = self.proc.communicate(timeout=timeout)
        return Result(self.proc.returncode, out, err, time.monotonic() - self.started)

    def pids(self) -> dict[str, int]:
        """Recorded worker (and grandchild) pids, by name: rank0, grandchild0, ..."""
        found = {}
        for name in os.listdir(self.pid_dir):
            if name.endswith(".pid"):
                found[name[:-4]] = int(Path(self.pid_dir, name).read_text())
        return found

    def wait_for_pids(self, count: int, timeout: float = 20.0) -> dict[str, int]:
        """Wait until ``count`` workers recorded their pids (they are running)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pids = self.pids()
            if sum(name.startswith("rank") for name in pids) >= count:
                return pids
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        out, err = self.proc.communicate(timeout=10) if self.proc.poll() is not None else ("", "")
        raise AssertionError(f"{count} workers did not start in {timeout} s: {self.pids()}\n"
                             f"{out}\n{err}")

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self.pids().values():
            if alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=10)
        shutil.rmtree(self.pid_dir, ignore_errors=True)


def run(*args: str, timeout: float = 30.0, env: dict | None = None,
        drop_env: tuple = ()) -> Result:
    """Run ringrun to completion (killing everything on timeout) and return its result."""
    with Ringrun(*args, env=env, drop_env=drop_env) as job:
        return job.wait(timeout)


def alive(pid: int) -> bool:
    """True if ``pid`` is a running test worker (not a zombie, not a reused pid)."""
    return world.process_alive(pid, marker=b"launcher")


def wait_all_dead(pids, timeout: float) -> list[int]:
    """Wait up to ``timeout`` s for every worker pid to be gone; returns those still alive."""
    return world.wait_all_dead(pids, timeout, marker=b"launcher")


def free_port() -> int:
    """A port free right now (bind :0, close). Racy, so acceptable in tests only."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def final_accuracy(stdout: str) -> float:
    """The accuracy an example's rank 0 printed last ("[0] final test accuracy 97.2%")."""
    import re

    match = re.search(r"\[0\] final test accuracy ([\d.]+)%", stdout)
    assert match, stdout
    return float(match.group(1)) / 100

