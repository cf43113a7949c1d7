"""Two-level collectives on one machine: ranks claim different hosts (``RINGRT_HOST_ID``),
so "hosts" talk over tcp on loopback and ranks of one "host" through its shared-memory arena
(world group) or the subgroup's own arena (``_comm/group_shm``), or ipc sockets
(``RINGRT_NO_SHM``). Every collective of the case
table, forced two-level, against NumPy bit for bit (the inputs are small integers, exact in
any order); subgroups spanning hosts; random floats against the flat ring within rounding.
The real multi-host runs are in tests/netlab/test_hierarchical.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.dist.cases import cases, expected_for_rank, same_bits
from tests.dist.hier_workers import HIERARCHICAL, rooted_input, subgroup_cases
from tests.world import run_world


def host_env(layout: list[int]) -> dict[int, dict]:
    hosts = [h for h, count in enumerate(layout) for _ in range(count)]
    return {rank: {"RINGRT_HOST_ID": f"host{h}"} for rank, h in enumerate(hosts)}


def table_failures(world, size: int, big: bool) -> list[str]:
    failures = []
    for case in cases(size, big):
        for rank in range(size):
            got = world[rank].arrays[case.name]
            want = expected_for_rank(case, size, rank)
            if got.size != want.size or not same_bits(got, want.reshape(got.shape)):
                failures.append(f"{case.name} rank {rank}")
    return failures


def subgroup_failures(world, subgroup: list[int]) -> list[str]:
    failures = []
    for case in subgroup_cases(len(subgroup)):
        for index, rank in enumerate(subgroup):
            got = world[rank].arrays[f"sub/{case.name}"]
            want = expected_for_rank(case, len(subgroup), index)
            if got.size != want.size or not same_bits(got, want.reshape(got.shape)):
                failures.append(f"sub/{case.name} rank {rank}")
    for root in range(len(subgroup)):
        for size in (5, 300_003):
            inputs = [rooted_input(i, root, size) for i in range(len(subgroup))]
            total = np.sum(inputs, axis=0, dtype=np.float32)
            for index, rank in enumerate(subgroup):
                if not np.array_equal(world[rank].arrays[f"sub/broadcast/root{root}/{size}"],
                                      inputs[root]):
                    failures.append(f"sub/broadcast root {root} size {size} rank {rank}")
                want = total if index == root else inputs[index]
                if not np.array_equal(world[rank].arrays[f"sub/reduce/root{root}/{size}"], want):
                    failures.append(f"sub/reduce root {root} size {size} rank {rank}")
    return failures


@pytest.mark.timeout(120)
@pytest.mark.parametrize("layout, subgroup, env", [
    ([2, 1, 3], [0, 1, 2, 4, 5], {}),                       # uneven: through host leaders
    ([2, 2, 2], [0, 1, 4, 5], {"RINGRT_SEGMENT_BYTES": "65536",  # even: shares per rank
                               "RINGRT_TWO_LEVEL": "shares"}),
    ([3, 3], [0, 1, 4, 5], {"RINGRT_NO_SHM": "1",         # ipc sockets inside hosts
                            "RINGRT_TWO_LEVEL": "direct"}),
], ids=["2-1-3-leaders", "2-2-2-shares", "3-3-sockets-direct"])
def test_every_collective_two_level(layout, subgroup, env):
    size = sum(layout)
    world = run_world("tests.dist.hier_workers:hierarchical_matrix", size, timeout=100,
                      args={"big": True, "subgroup": subgroup},
                      env={"RINGRT_ALGO": HIERARCHICAL, **env}, per_rank_env=host_env(layout))
    failures = table_failures(world, size, big=True) + subgroup_failures(world, subgroup)
    assert not failures, f"{len(failures)} wrong: {failures[:20]}"
    chosen = world[0].values["algorithms"]
    for op in ("all_reduce", "broadcast", "reduce", "all_gather", "barrier"):
        assert chosen.get(f"{op}/hierarchical"), (op, chosen)
    arenas = [world[r].values["host_arena"] for r in range(size)]
    hosts = [h for h, count in enumerate(layout) for _ in range(count)]
    want = [layout[h] > 1 and "RINGRT_NO_SHM" not in env for h in hosts]
    assert arenas == want, "a host arena on every host with several ranks, unless shm is off"
    group_arenas = [world[r].values["group_arenas"] for r in range(size)]
    want = [int(r in subgroup and sum(hosts[m] == hosts[r] for m in subgroup) > 1
                and "RINGRT_NO_SHM" not in env) for r in range(size)]
    assert group_arenas == want, "the subgroup's own arena on every host with several members"
    cores = len(os.sched_getaffinity(0))               # the ranks inherit this affinity
    assert all(world[r].values["host_cores"] == [cores] * len(layout) for r in range(size)), \
        "every rank reads each host's cores from the cards (the choice's load factor)"


@pytest.mark.timeout(60)
def test_two_level_floats_match_flat_within_rounding():
    world = run_world("tests.dist.hier_workers:float_sums", 5, timeout=45,
                      per_rank_env=host_env([3, 2]))
    for size in (1000, 300_003):
        inputs = [np.random.default_rng(r * 7919 + size).standard_normal(size)
                  .astype(np.float32) for r in range(5)]
        exact = np.sum(np.array(inputs, np.float64), axis=0)
        for setting in ("two_level", "flat"):
            results = [world[r].arrays[f"{setting}/{size}"] for r in range(5)]
            assert all(x.tobytes() == results[0].tobytes() for x in results), \
                f"{setting}: ranks disagree"
            # float32 sums of 5 terms: a few ulps of the largest term
            np.testing.assert_allclose(results[0], exact, rtol=0, atol=4e-6 * 5 * 4)
        assert not np.array_equal(world[0].arrays[f"two_level/{size}"], inputs[0])
    assert world[0].values["algorithms"].get("all_reduce/hierarchical") == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["op", "dtype", "big_count", "root"])
def test_mismatched_two_level_calls_raise_on_every_rank(kind):
    """tests/dist's mismatch cases on hosts of 2 + 2 ranks, forced two-level: rank 1 (rank 0's
    host peer, reached through the host's arena) calls differently; every rank raises
    CollectiveMismatchError naming the op, within seconds, and the group stays broken."""
    world = run_world("tests.dist.fault_workers:mismatch", 4, timeout=40, args={"kind": kind},
                      env={"RINGRT_ALGO": HIERARCHICAL}, per_rank_env=host_env([2, 2]))
    for rank in range(4):
        first, follow_up = world[rank].values["first"], world[rank].values["follow_up"]
        raised = first if first[0] != "ok" else follow_up     # a broadcast root only sends
        assert raised[0] == "CollectiveMismatchError", (rank, first, follow_up)
        # a rank whose part of op #0 completed learns of it at op #1, from the notice
        assert "op #0" in raised[1] or "rank 1 called broadcast" in raised[1], raised[1]
        assert raised[2] < 10, raised
        assert follow_up[0] == "CollectiveMismatchError", follow_up


@pytest.mark.timeout(60)
@pytest.mark.parametrize("late", [0, 3, 5])
def test_two_level_barrier_waits_for_every_host(late):
    """Hosts of 2, 1 and 3 ranks, barrier forced two-level: nobody leaves before the late rank
    (a leader, a lone rank, a non-leader) entered."""
    world = run_world("tests.dist.hier_workers:barrier_waits", 6, timeout=40,
                      args={"late": late}, env={"RINGRT_ALGO": "barrier=hierarchical"},
                      per_rank_env=host_env([2, 1, 3]))
    entered = world[late].values["entered"]
    for rank in range(6):
        assert world[rank].values["left"] >= entered, (rank, late)
