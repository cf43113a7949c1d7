"""Start a recipe's processes the way its tool would, wait with a hard timeout, and leave
nothing behind: every process starts in a session of its own and the whole session is killed
at the end, whatever happened; processes a framework starts in other sessions (Ray's) are
found by a marker in their environment and killed by pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
MARKER = "RINGRT_RECIPE_JOB"


def script(name: str) -> str:
    return str(SCRIPTS / name)


def free_port() -> int:
    """A port free right now (bind :0, close). Racy, so acceptable in tests only."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(tag: str, ipc_dir: str) -> dict:
    """The environment of a recipe's processes: no launcher variables of ours, one thread, a
    socket directory of this test's own (so it can check that nothing is left there)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env[MARKER] = tag
    env[IPC_DIR] = ipc_dir
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT", "RINGRT_TOKEN", "NODE_RANK"):
        env.pop(name, None)
    return env


def run_all(commands: list[tuple[list[str], dict]], timeout: float, cwd=REPO) -> list[str]:
    """Run every (argv, env) at once; return their outputs; fail on a non-zero exit."""
    tag = next(iter(commands))[1].get(MARKER, "")
    procs = [subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
             for argv, env in commands]
    outputs = []
    try:
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{proc.args} did not finish within {timeout} s")
            outputs.append(out)
            assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{out[-6000:]}"
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
        kill_marked(tag)
    return outputs


def kill_marked(tag: str) -> None:
    """SIGKILL every process whose environment carries ``MARKER=tag`` (e.g. Ray's daemons)."""
    if not tag:
        return
    needle = f"{MARKER}={tag}".encode()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            if needle in (pid_dir / "environ").read_bytes().split(b"\0"):
                os.kill(int(pid_dir.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def assert_same_params(gloo_path: Path, ringrt_path: Path) -> None:
    """The run over ringrt ended on gloo's parameters, bit for bit (world 2: exact sums)."""
    gloo, ours = np.load(gloo_path), np.load(ringrt_path)
    assert sorted(gloo.files) == sorted(ours.files)
    assert gloo.files, "no parameters saved"
    for name in gloo.files:
        assert np.isfinite(gloo[name]).all(), name
        np.testing.assert_array_equal(ours[name], gloo[name], err_msg=name)


def ensure_module(module: str, requirement: str) -> None:
    """Import ``module``, pip-installing ``requirement`` into this virtualenv first when it is
    missing and ``make test-recipes`` allowed it (RINGRT_RECIPES_INSTALL=1); skip otherwise."""
    import importlib
    import importlib.util

    try:
        missing = importlib.util.find_spec(module) is None
    except ModuleNotFoundError:           # a dotted name whose parent package is missing
        missing = True
    if missing:
        if os.environ.get("RINGRT_RECIPES_INSTALL") != "1" or sys.prefix == sys.base_prefix:
            pytest.skip(f"{module} is not installed (make test-recipes installs {requirement} "
                        "into .venv-recipes)")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", requirement],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.skip(f"could not install {requirement}: {done.stderr[-600:]}")
        importlib.invalidate_caches()
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken install must skip, not fail the recipe
        pytest.skip(f"{module} does not import here: {exc!r}")


def slow_recipes_enabled() -> None:
    """The framework recipes download and train: only under ``make test-recipes``."""
    if os.environ.get("RINGRT_RECIPES") != "1":
        pytest.skip("a framework recipe: run it with `make test-recipes`")


IPC_DIR = "RINGRT_IPC_DIR"


def leftover_ipc(env: dict) -> list[str]:
    """What the ranks left in their socket directory (it must be empty after a clean exit)."""
    return sorted(os.listdir(env[IPC_DIR])) if os.path.isdir(env[IPC_DIR]) else []


def rmtree(path) -> None:
    shutil.rmtree(path, ignore_errors=True)
