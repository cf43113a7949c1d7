"""ringrun's command line: help, and usage errors (exit 2) that name the problem and the fix."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launcher._ringrun import REPO, run, script

pytestmark = pytest.mark.timeout(60)


def test_help_lists_every_option_and_examples():
    result = run("--help", timeout=20)
    assert result.returncode == 0, result
    for option in ("--nproc-per-node", "--module", "--nnodes", "--node-rank", "--master-addr",
                   "--master-port", "--token", "--max-restarts", "--grace", "--timeout",
                   "--log-dir", "--local-ranks-filter", "--quiet-ranks", "--cpu-bind",
                   "--bind", "--verbose",
                   "--encrypt", "RINGRT_TOKEN", "RINGRT_RESTART_COUNT", "RINGRT_ENCRYPT",
                   "RINGRUN_TTY"):
        assert option in result.stdout, option
    assert "ringrun -n 4 train.py" in result.stdout
    assert "--nnodes 2 --node-rank 1" in result.stdout
    assert "--max-restarts 3" in result.stdout
    assert "--nnodes 2:4" in result.stdout and "RINGRT_GENERATION" in result.stdout


def test_console_script_is_installed():
    ringrun = Path(sys.executable).with_name("ringrun")
    proc = subprocess.run([str(ringrun), "--version"], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0 and proc.stdout.startswith("ringrun, version"), proc


def test_missing_script():
    result = run("-n", "2", "no_such_script.py", timeout=20)
    assert result.returncode == 2, result
    assert "no_such_script.py" in result.stderr and "not found" in result.stderr


def test_zero_workers():
    result = run("-n", "0", script("echo_env.py"), timeout=20)
    assert result.returncode == 2, result
    assert "--nproc-per-node" in result.stderr and "0 is not in the range" in result.stderr


def test_port_in_use_names_it_and_suggests_another():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("--master-port", str(port), script("echo_env.py"), timeout=20)
    assert result.returncode == 2, result
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert "--master-port" in result.stderr


def test_unresolvable_master_addr():
    result = run("--master-addr", "no-such-host.invalid", script("echo_env.py"), timeout=30)
    assert result.returncode == 2, result
    assert "cannot resolve 'no-such-host.invalid'" in result.stderr
    assert "--master-addr" in result.stderr


def test_multi_host_without_token_is_refused():
    result = run("--nnodes", "2", "--node-rank", "1", "--master-addr", "127.0.0.1",
                 script("echo_env.py"), timeout=20, drop_env=("RINGRT_TOKEN",))
    assert result.returncode == 2, result
    assert "RINGRT_TOKEN" in result.stderr
    assert "export RINGRT_TOKEN=$(python -c 'import secrets;print(secrets.token_hex(16))')" \
        in result.stderr


@pytest.mark.parametrize("args, message", [
    (("--nnodes", "2", "--node-rank", "2", "--master-addr", "127.0.0.1"), "node rank 2"),
    (("--nnodes", "2", "--token", "t"), "needs --master-addr"),
    (("-n", "2", "--local-ranks-filter", "0,5"), "local ranks must be in [0, 2)"),
    (("--quiet-ranks", "--local-ranks-filter", "0"), "not both"),
])
def test_inconsistent_options(args, message):
    result = run(*args, script("echo_env.py"), timeout=20)
    assert result.returncode == 2, result
    assert message in result.stderr


def test_trampoline_exits_when_its_parent_is_not_the_launcher():
    # Parent pid 1 is never ours: the trampoline must refuse to exec the command.
    proc = subprocess.run([sys.executable, "-m", "ringrt_launcher._child", "1", "-", "--",
                           "echo", "should not run"], cwd=REPO, capture_output=True, text=True,
                          timeout=20)
    assert proc.returncode == 1 and "should not run" not in proc.stdout


def test_master_addr_that_is_not_this_host():
    # 192.0.2.1 (TEST-NET-1, RFC 5737) resolves but is never a local address.
    result = run("--master-addr", "192.0.2.1", script("echo_env.py"), timeout=20)
    assert result.returncode == 2, result
    assert "192.0.2.1 is not an address of this host" in result.stderr
    assert "--bind-addr 0.0.0.0" in result.stderr
