"""Nothing left behind, even after SIGKILL: the directories of a ringrun killed
with SIGKILL (its job directory, where its ranks' ipc sockets live, and its flight-recorder
directory) are removed by the next ringrun or rank that starts, and only a dead owner's."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys

import pytest

from ringrt._comm import stale, transport
from tests.launcher._ringrun import Ringrun, run, script, wait_all_dead


def _dirs_of(pid: int) -> list[str]:
    return sorted(glob.glob(f"/tmp/ringrun-{pid}-*") + glob.glob(f"/tmp/ringrun-flight-{pid}-*"))


def _killed_mid_job() -> tuple[int, list[str]]:
    """A 2-rank job (ranks in a collective) whose ringrun got SIGKILL; its leftovers."""
    with Ringrun("-n", "2", "--timeout", "60", script("hang.py")) as job:
        workers = job.wait_for_pids(2)
        leftovers = _dirs_of(job.proc.pid)
        assert len(leftovers) == 2, leftovers
        assert glob.glob(f"{leftovers[0]}/rr-*"), "the ranks' ipc directories are inside"
        os.kill(job.proc.pid, signal.SIGKILL)
        job.proc.wait(timeout=10)
        assert not wait_all_dead(workers.values(), timeout=15), "workers outlived ringrun"
        assert _dirs_of(job.proc.pid) == leftovers, "SIGKILL left nothing: no test here"
        return job.proc.pid, leftovers


@pytest.mark.timeout(90)
@pytest.mark.parametrize("next_start", ["ringrun", "rank"])
def test_a_sigkilled_ringrun_leaves_nothing_after_the_next_start(next_start):
    pid, leftovers = _killed_mid_job()
    if next_start == "ringrun":
        result = run("-n", "1", script("echo_env.py"), timeout=30)
        assert result.returncode == 0, result
    else:
        path = transport.make_ipc_dir()          # what every rank does first
        shutil.rmtree(path)
    assert not [p for p in leftovers if os.path.exists(p)], f"ringrun {pid} left {leftovers}"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def parent(tmp_path):
    return str(tmp_path)


def test_a_live_owners_directory_is_never_swept(parent):
    path, lock = stale.make_owned_dir("ringrun-", parent)
    try:
        assert stale.remove_stale(parent, "ringrun-") == 0 and os.path.isdir(path)
    finally:
        os.close(lock)
    assert stale.remove_stale(parent, "ringrun-") == 1 and not os.path.exists(path)


def test_a_held_lock_wins_over_a_dead_pid_and_a_free_lock_over_a_live_pid(parent):
    """The lock is what says alive: a dead-looking pid (another pid namespace) whose lock is
    held is kept; a live pid (reused) whose lock is free is swept."""
    held = os.path.join(parent, f"ringrun-{_dead_pid()}-held")
    reused = os.path.join(parent, f"ringrun-{os.getpid()}-reused")
    for path in (held, reused):
        os.mkdir(path)
        open(os.path.join(path, stale.LOCK_NAME), "w").close()
    fd = os.open(os.path.join(held, stale.LOCK_NAME), os.O_RDONLY)
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert stale.remove_stale(parent, "ringrun-") == 1
        assert os.path.isdir(held) and not os.path.exists(reused)
    finally:
        os.close(fd)


def test_without_a_lock_file_only_a_gone_pid_is_swept(parent):
    dead = os.path.join(parent, f"ringrun-{_dead_pid()}-x")
    live = os.path.join(parent, f"ringrun-{os.getpid()}-x")
    old_style = os.path.join(parent, "ringrun-12345678")      # an older ringrun: no pid
    flight = os.path.join(parent, f"ringrun-flight-{_dead_pid()}-x")
    for path in (dead, live, old_style, flight):
        os.mkdir(path)
    assert stale.remove_stale(parent, "ringrun-") == 1
    assert not os.path.exists(dead) and os.path.isdir(live) and os.path.isdir(old_style)
    assert stale.remove_stale(parent, "ringrun-flight-") == 1 and not os.path.exists(flight)
