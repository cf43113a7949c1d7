"""``ringrun --bind none|core|numa``: each worker's own affinity (os.sched_getaffinity inside
it, printed by scripts/echo_env.py) and OMP_NUM_THREADS, checked against the CPUs this test
may use and the NUMA nodes read from /sys here; and the plan itself on made-up machines."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ringrt_launcher import binding
from tests.launcher._ringrun import REPO, run, script
from tests.launcher.test_run import _reports

pytestmark = pytest.mark.timeout(60)
ALLOWED = sorted(os.sched_getaffinity(0))


def _bound(*args: str, nproc: int) -> tuple[dict[int, dict], str]:
    result = run("-n", str(nproc), "-v", *args, script("echo_env.py"), timeout=40,
                 drop_env=("OMP_NUM_THREADS",))
    assert result.returncode == 0, result
    reports = _reports(result.stdout)
    assert sorted(reports) == list(range(nproc)), result
    return reports, result.stderr


def test_core_gives_each_rank_its_own_equal_slice_and_threads():
    nproc = min(2, len(ALLOWED))
    reports, stderr = _bound("--bind", "core", nproc=nproc)
    slices = [set(reports[rank]["affinity"]) for rank in range(nproc)]
    assert set().union(*slices) == set(ALLOWED)
    assert sum(map(len, slices)) == len(ALLOWED)                  # disjoint
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    for rank, cpus in enumerate(slices):
        assert reports[rank]["env"]["OMP_NUM_THREADS"] == str(len(cpus))
        assert f"bind: rank {rank} (local {rank}): cpus " in stderr      # --verbose's map


def test_more_ranks_than_cpus_share_cpus_with_one_thread_and_a_warning():
    nproc = len(ALLOWED) + 1
    reports, stderr = _bound("--bind", "core", nproc=nproc)
    for rank in range(nproc):
        assert reports[rank]["affinity"] == [ALLOWED[rank % len(ALLOWED)]]
        assert reports[rank]["env"]["OMP_NUM_THREADS"] == "1"
    assert "oversubscribed" in stderr


def test_numa_puts_each_rank_on_the_cpus_of_one_node():
    nodes = {}
    for path in Path("/sys/devices/system/node").glob("node[0-9]*/cpulist"):
        cpus = binding.parse_cpus(path.read_text()) & set(ALLOWED)
        if cpus:
            nodes[int(path.parent.name[4:])] = sorted(cpus)
    nodes = nodes or {0: ALLOWED}
    reports, stderr = _bound("--bind", "numa", nproc=2)
    for rank in range(2):
        affinity = reports[rank]["affinity"]
        assert affinity in nodes.values(), (affinity, nodes)
        sharing = sum(reports[r]["affinity"] == affinity for r in range(2))
        assert reports[rank]["env"]["OMP_NUM_THREADS"] == str(max(1, len(affinity) // sharing))
    assert "numa node" in stderr


def test_none_leaves_placement_to_the_scheduler():
    reports, stderr = _bound("--bind", "none", nproc=2)
    for rank in range(2):
        assert reports[rank]["affinity"] == ALLOWED
        assert reports[rank]["env"]["OMP_NUM_THREADS"] == "1"
    assert "bind:" not in stderr


@pytest.mark.skipif(not shutil.which("taskset"), reason="needs taskset (util-linux)")
def test_the_launchers_own_allowed_cpus_are_respected():
    only = ALLOWED[-1]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run(["taskset", "-c", str(only), sys.executable, "-m", "ringrt_launcher",
                           "-n", "2", "--bind", "core", script("echo_env.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=40)
    assert proc.returncode == 0, proc.stderr
    reports = _reports(proc.stdout)
    assert [reports[rank]["affinity"] for rank in range(2)] == [[only], [only]]


def test_bind_and_cpu_bind_together_is_a_usage_error():
    result = run("--bind", "core", "--cpu-bind", script("echo_env.py"), timeout=20)
    assert result.returncode == 2 and "--cpu-bind and --bind core" in result.stderr, result


# The plan on machines we do not have: two NUMA nodes of 8 CPUs.
TWO_NODES = {0: set(range(8)), 1: set(range(8, 16))}
BY_ID = lambda cpu: (cpu,)                                    # noqa: E731  (no SMT siblings)


def test_plan_core_splits_along_nodes():
    placements = binding.plan("core", 4, set(range(16)), TWO_NODES, BY_ID)
    assert [p.cpu_list() for p in placements] == ["0-3", "4-7", "8-11", "12-15"]
    assert [p.node for p in placements] == [0, 0, 1, 1]
    assert [p.threads for p in placements] == [4, 4, 4, 4]


def test_plan_core_keeps_within_the_allowed_cpus():
    placements = binding.plan("core", 3, {1, 2, 3, 9, 10, 11}, TWO_NODES, BY_ID)
    assert [p.cpu_list() for p in placements] == ["1-2", "3,9", "10-11"]
    assert placements[1].node is None                          # a slice across two nodes


def test_plan_numa_spreads_ranks_over_nodes_and_divides_threads():
    placements = binding.plan("numa", 4, set(range(2, 16)), TWO_NODES)
    assert [p.node for p in placements] == [0, 0, 1, 1]
    assert [p.cpu_list() for p in placements] == ["2-7", "2-7", "8-15", "8-15"]
    assert [p.threads for p in placements] == [3, 3, 4, 4]
    assert [p.node for p in binding.plan("numa", 2, set(range(16)), TWO_NODES)] == [0, 1]


def test_plan_without_sysfs_nodes_is_one_node():
    placements = binding.plan("numa", 2, {0, 1, 2, 3}, {})
    assert [p.cpu_list() for p in placements] == ["0-3", "0-3"]
    assert [p.threads for p in placements] == [2, 2]
    assert binding.plan("none", 2, {0, 1}, {}) is None


def test_plan_core_keeps_hyperthread_siblings_together():
    siblings = lambda cpu: (cpu % 4, cpu)      # noqa: E731  (cpu k and k+4 share a core)
    placements = binding.plan("core", 2, set(range(8)), {0: set(range(8))}, siblings)
    assert [p.cpu_list() for p in placements] == ["0-1,4-5", "2-3,6-7"]


def test_cpulist_round_trip():
    assert binding.parse_cpus("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert binding.format_cpus({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
