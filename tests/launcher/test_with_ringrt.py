"""Jobs that use ringrt itself: rendezvous through the launcher's store, on one or two "hosts"."""

import re
import secrets

import pytest

from tests.launcher._ringrun import Ringrun, free_port, run, script

pytestmark = pytest.mark.timeout(120)

# Collective timeout inside the workers: well below the waits below, so a hang reports itself.
TIMEOUT = ("--timeout", "30")


def _ok_ranks(stdout: str, total: float) -> set[int]:
    """Ranks that printed "OK" with the expected all_reduce result."""
    expected = " ".join([f"{total:g}."] * 4)
    return {int(m.group(1)) for m in re.finditer(r"^\[(\d+)\] OK \[(.*)\]$", stdout, re.M)
            if m.group(2).split() == expected.split()}


def test_single_host_all_reduce():
    result = run("-n", "3", *TIMEOUT, script("allreduce.py"), timeout=90)
    assert result.returncode == 0, result
    assert _ok_ranks(result.stdout, 1 + 2 + 3) == {0, 1, 2}, result


def test_two_hosts_emulated_on_one_machine():
    # Binding :0 and closing before ringrun binds it is racy: acceptable in a test only.
    common = ("--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
              "-n", "2", *TIMEOUT)
    env = {"RINGRT_TOKEN": secrets.token_hex(16)}
    # Node 1 starts first: its workers must wait for node 0's store to come up.
    with Ringrun(*common, "--node-rank", "1", script("allreduce.py"), env=env) as node1, \
            Ringrun(*common, "--node-rank", "0", script("allreduce.py"), env=env) as node0:
        result0 = node0.wait(timeout=90)
        result1 = node1.wait(timeout=90)
    assert result0.returncode == 0, result0
    assert result1.returncode == 0, result1
    assert _ok_ranks(result0.stdout, 10) == {0, 1}, result0
    assert _ok_ranks(result1.stdout, 10) == {2, 3}, result1


def test_restarted_group_rendezvouses_again():
    result = run("-n", "3", "--max-restarts", "1", *TIMEOUT, script("allreduce_restart.py"),
                 timeout=90)
    assert result.returncode == 0, result
    assert "restart 1 of 1" in result.stderr and "rank 1 failed (exit code 7)" in result.stderr
    for rank in range(3):
        assert f"[{rank}] attempt 1 OK 6" in result.stdout, result


def test_encrypted_job_over_tcp():
    # tcp (not ipc) so the data plane really crosses sockets with CurveZMQ on every one.
    result = run("--encrypt", "-n", "3", *TIMEOUT, script("allreduce.py"), timeout=90,
                 env={"RINGRT_TRANSPORT": "tcp"})
    assert result.returncode == 0, result
    assert _ok_ranks(result.stdout, 1 + 2 + 3) == {0, 1, 2}, result


def test_encrypted_workers_refuse_a_plaintext_store():
    # Workers told to encrypt cannot talk to a store that does not: a clear error, no hang.
    result = run("-n", "2", "--timeout", "5", script("allreduce.py"), timeout=60,
                 env={"RINGRT_ENCRYPT": "1"})
    assert result.returncode != 0, result
    assert "encrypt" in (result.stderr + result.stdout).lower(), result
