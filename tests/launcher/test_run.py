"""Successful jobs: worker environment, -m, argument pass-through, output lines, logs, filters."""

import json
import os
import re

import pytest

from tests.launcher._ringrun import run, script

pytestmark = pytest.mark.timeout(60)


def _reports(stdout: str) -> dict[int, dict]:
    """rank -> the JSON echo_env.py printed, read from "[R] ENV {...}" lines."""
    found = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"\[(\d+)\] ENV (.*)", line)
        if match:
            found[int(match.group(1))] = json.loads(match.group(2))
    return found


def test_four_workers_get_their_environment_and_prefixes():
    result = run("-n", "4", "--timeout", "12.5", script("echo_env.py"), timeout=30,
                 drop_env=("OMP_NUM_THREADS", "RINGRT_TOKEN", "RINGRT_IPC_DIR"))
    assert result.returncode == 0, result
    reports = _reports(result.stdout)
    assert sorted(reports) == [0, 1, 2, 3], result
    envs = [reports[r]["env"] for r in range(4)]
    for rank, env in enumerate(envs):
        assert env["RANK"] == env["LOCAL_RANK"] == str(rank)
        assert env["WORLD_SIZE"] == env["LOCAL_WORLD_SIZE"] == "4"
        assert env["NODE_RANK"] == "0"
        assert env["MASTER_ADDR"] == "127.0.0.1"
        assert env["RINGRT_RESTART_COUNT"] == "0"
        assert env["RINGRT_STORE_HOSTED"] == "1"
        assert env["RINGRT_TIMEOUT"] == "12.5"
        assert env["OMP_NUM_THREADS"] == "1"
        assert env["PYTHONUNBUFFERED"] == "1"
    assert len({env["MASTER_PORT"] for env in envs}) == 1 and int(envs[0]["MASTER_PORT"]) > 0
    assert len({env["RINGRT_TOKEN"] for env in envs}) == 1
    assert re.fullmatch(r"[0-9a-f]{32}", envs[0]["RINGRT_TOKEN"])
    ipc_dir = envs[0]["RINGRT_IPC_DIR"]
    assert {env["RINGRT_IPC_DIR"] for env in envs} == {ipc_dir}
    assert ipc_dir.startswith("/tmp/ringrun-") and not os.path.exists(ipc_dir)   # removed
    stderr_lines = set(result.stderr.splitlines())
    assert {f"[{r}] stderr line from rank {r}" for r in range(4)} <= stderr_lines


def test_token_is_fresh_per_job_and_omp_threads_is_kept_when_set():
    first, second = (run("-n", "2", script("echo_env.py"), timeout=30,
                         env={"OMP_NUM_THREADS": "3"}, drop_env=("RINGRT_TOKEN",))
                     for _ in range(2))
    assert first.returncode == second.returncode == 0, (first, second)
    first_env, second_env = _reports(first.stdout)[0]["env"], _reports(second.stdout)[0]["env"]
    assert first_env["RINGRT_TOKEN"] != second_env["RINGRT_TOKEN"]
    assert first_env["OMP_NUM_THREADS"] == "3"


def test_module_form_and_argument_pass_through():
    args = ("--nnodes", "3", "-n", "7", "--help", "--max-restarts=2", "plain")
    result = run("-n", "2", "-m", "tests.launcher.scripts.echo_env", *args, timeout=30)
    assert result.returncode == 0, result
    reports = _reports(result.stdout)
    assert sorted(reports) == [0, 1], result
    for report in reports.values():
        assert report["module"] == "tests.launcher.scripts.echo_env"
        assert report["argv"] == list(args)


def test_script_arguments_that_look_like_ringrun_options():
    args = ("--nnodes", "2", "--node-rank", "5", "-m", "x", "--", "-n", "0")
    result = run("--nproc-per-node", "1", script("echo_env.py"), *args, timeout=30)
    assert result.returncode == 0, result
    assert _reports(result.stdout)[0]["argv"] == list(args)


def test_lines_are_whole_and_prefixed_under_load():
    lines, width = 400, 3000            # 4 ranks x 1.2 MB through the pipes at once
    result = run("-n", "4", script("chatty.py"), str(lines), str(width), timeout=45)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = {r: 0 for r in range(4)}
    tails = set()
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"\[(\d)\] rank (\d) line (\d+) (\d+)", line)
        if match:
            rank = int(match.group(1))
            assert match.group(2) == str(rank) and match.group(4) == str(rank) * width
            counts[rank] += 1
        else:
            assert re.fullmatch(r"\[(\d)\] rank \1 no newline at the end", line), line[:200]
            tails.add(line)
    assert counts == {r: lines for r in range(4)}
    assert len(tails) == 4
    assert sum(line.startswith("[") for line in result.stderr.splitlines()) == 4 * 4


def test_log_dir_has_one_unprefixed_file_per_rank(tmp_path):
    log_dir = tmp_path / "logs"
    result = run("-n", "2", "--log-dir", str(log_dir), script("chatty.py"), "3", "5", timeout=30)
    assert result.returncode == 0, result
    assert sorted(os.listdir(log_dir)) == ["rank0.log", "rank1.log"]
    for rank in range(2):
        text = (log_dir / f"rank{rank}.log").read_text()
        for i in range(3):
            assert f"rank {rank} line {i} {str(rank) * 5}\n" in text
        assert f"rank {rank} err 0\n" in text
        assert f"rank {rank} no newline at the end\n" in text
        assert "[" not in text


@pytest.mark.parametrize("option, shown", [
    (("--local-ranks-filter", "1,2"), {1, 2}),
    (("--quiet-ranks",), {0}),
])
def test_console_filter_shows_only_the_chosen_local_ranks(option, shown):
    result = run("-n", "3", *option, script("echo_env.py"), timeout=30)
    assert result.returncode == 0, result
    assert set(_reports(result.stdout)) == shown
    assert {int(line[1]) for line in result.stderr.splitlines() if line.startswith("[")} == shown


def test_cpu_bind_pins_local_rank_i_to_cpu_i_mod_count():
    allowed = sorted(os.sched_getaffinity(0))
    result = run("-n", "3", "--cpu-bind", script("echo_env.py"), timeout=30)
    assert result.returncode == 0, result
    reports = _reports(result.stdout)
    for rank in range(3):
        assert reports[rank]["affinity"] == [allowed[rank % len(allowed)]]
    unbound = run("-n", "1", script("echo_env.py"), timeout=30)
    assert _reports(unbound.stdout)[0]["affinity"] == allowed


def test_carriage_return_updates_are_drawn_in_place_and_not_logged(tmp_path):
    result = run("-n", "1", "--log-dir", str(tmp_path), script("progress.py"), timeout=30)
    assert result.returncode == 0, result
    # Read with universal newlines, each "\r" shows as "\n": the raw console stream was
    # "\r[0] progress 0\r[0] progress 1\r[0] progress 2\r[0] done\n[0] after\n".
    assert result.stdout == ("\n[0] progress 0\n[0] progress 1\n[0] progress 2\n[0] done\n"
                             "[0] after\n"), repr(result.stdout)
    assert (tmp_path / "rank0.log").read_text() == "done\nafter\n"


def test_encrypt_and_tty_reach_the_worker_environment_only_when_set(monkeypatch):
    from ringrt_launcher.config import LaunchConfig
    from ringrt_launcher.env import worker_env

    for name in ("RINGRT_ENCRYPT", "RINGRUN_TTY"):
        monkeypatch.delenv(name, raising=False)
    plain = worker_env(LaunchConfig(nproc=1, target="x.py"), 0, 0, 29500, "/tmp/ipc")
    assert "RINGRT_ENCRYPT" not in plain and "RINGRUN_TTY" not in plain
    both = worker_env(LaunchConfig(nproc=1, target="x.py", encrypt=True), 0, 0, 29500,
                      "/tmp/ipc", tty=True)
    assert both["RINGRT_ENCRYPT"] == both["RINGRUN_TTY"] == "1"
