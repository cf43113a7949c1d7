"""Failures and signals: the others are stopped, nothing is left, the right status comes out."""

import shutil
import signal
import time

import pytest

from tests.launcher._ringrun import Ringrun, alive, run, script, wait_all_dead
from tests.world import short_tmpdir

pytestmark = pytest.mark.timeout(60)


def test_failing_rank_stops_the_others_and_sets_the_exit_code():
    # rank 2 exits 3; rank 1 ignores SIGTERM (needs the SIGKILL after --grace); rank 0 has a
    # grandchild in its process group that must go too.
    with Ringrun("-n", "4", "--grace", "1", script("worker.py"), "--fail-rank", "2",
                 "--exit-code", "3", "--ignore-sigterm-rank", "1",
                 "--grandchild-rank", "0") as job:
        result = job.wait(timeout=30)
        pids = job.pids()
    assert result.returncode == 3, result
    assert result.elapsed < 15, result
    assert set(pids) == {"rank0", "rank1", "rank2", "rank3", "grandchild0"}
    assert [pid for pid in pids.values() if alive(pid)] == []
    assert "rank 2 (local rank 2 on node 0" in result.stderr
    assert "failed first: exit code 3" in result.stderr
    assert "| rank 2 is about to fail on purpose" in result.stderr


def test_rank_killed_by_a_signal_is_named_and_gives_128_plus_signal():
    result = run("-n", "3", script("worker.py"), "--fail-rank", "1", "--sigkill", timeout=30)
    assert result.returncode == 128 + signal.SIGKILL == 137, result
    assert "rank 1 (local rank 1" in result.stderr
    assert "killed by signal SIGKILL" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_to_ringrun_stops_every_worker(signum):
    with Ringrun("-n", "3", "--grace", "1", script("worker.py"),
                 "--ignore-sigterm-rank", "2") as job:
        pids = job.wait_for_pids(3)
        job.proc.send_signal(signum)
        sent = time.monotonic()
        result = job.wait(timeout=20)
        assert wait_all_dead(pids.values(), timeout=10 - (time.monotonic() - sent)) == []
    assert time.monotonic() - sent < 10
    assert result.returncode == 128 + signum, result
    assert f"received {signal.Signals(signum).name}; stopping 3 worker(s)" in result.stderr


def test_workers_die_with_a_sigkilled_ringrun():
    # A SIGKILLed ringrun cannot remove its ipc directory: give it one this test removes.
    ipc_dir = short_tmpdir("rrl-ipc-")
    try:
        with Ringrun("-n", "3", script("worker.py"), "--grandchild-rank", "1",
                     env={"RINGRT_IPC_DIR": ipc_dir}) as job:
            pids = job.wait_for_pids(3)
            job.proc.kill()
            job.proc.wait(timeout=10)
            ranks = [pid for name, pid in pids.items() if name.startswith("rank")]
            # PDEATHSIG kills the workers; the grandchild is not covered (it has no death
            # signal and is not ours), so only the workers are checked.
            assert wait_all_dead(ranks, timeout=10) == []
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)


def test_max_restarts_recovers_and_says_why(tmp_path):
    result = run("-n", "3", "--max-restarts", "2", "--log-dir", str(tmp_path),
                 script("restart.py"), timeout=30)
    assert result.returncode == 0, result
    assert "restart 1 of 2" in result.stderr
    assert "because rank 1 failed (exit code 5)" in result.stderr
    assert "restart 2 of 2" not in result.stderr
    for rank in range(3):
        assert f"[{rank}] rank {rank} attempt 1" in result.stdout
    # One log per rank holds every attempt.
    assert (tmp_path / "rank1.log").read_text() == "rank 1 attempt 0\nrank 1 attempt 1\n"


def test_max_restarts_exhausted_returns_the_last_failure():
    result = run("-n", "2", "--max-restarts", "1", script("worker.py"), "--fail-rank", "0",
                 "--exit-code", "4", timeout=30)
    assert result.returncode == 4, result
    assert result.stderr.count("restart 1 of 1") == 1
    assert result.stderr.count("failed first: exit code 4") == 2
