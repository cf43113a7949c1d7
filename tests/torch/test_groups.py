"""torch subgroups on the "ringrt" backend run over shared memory: the torch case table on
a subgroup, against the reference and against gloo on the same ranks in the same job; uneven
all_to_all: all_to_all_single with split sizes (in the table, against gloo too) and lists of
different sizes (against the reference: gloo refuses them)."""

import numpy as np
import pytest

from tests.torch.cases import as_numpy, cases, expected
from tests.torch.group_workers import uneven_list_sizes
from tests.world import run_world

SOCKET_ALGORITHMS = ("ring", "recursive_doubling", "binomial", "chain")


@pytest.mark.timeout(200)
def test_subgroup_table_over_shared_memory_matches_gloo_and_the_reference():
    world_size, size = 4, 3
    world = run_world("tests.torch.group_workers:subgroup_table", world_size, timeout=150)
    failures, against_gloo = [], 0
    for rank in range(size):
        got_all = world[rank].arrays
        for case in cases(size):
            got = got_all["ringrt/" + case.name]
            want = expected(case, size, rank)
            if want is not None and got.tobytes() != as_numpy(want.reshape(got.shape)).tobytes():
                failures.append(f"{case.name} rank {rank}: got {got.ravel()[:6]}")
            theirs = got_all.get("gloo/" + case.name)
            if theirs is not None and want is not None:
                against_gloo += 1
                if theirs.dtype == bool:
                    theirs = theirs.view(np.uint8) != 0
                if theirs.tobytes() != got.tobytes():
                    failures.append(f"{case.name} rank {rank}: differs from gloo")
        lists = got_all["ringrt/uneven_lists"]
        want = np.concatenate([np.arange(uneven_list_sizes(q, rank), dtype=np.float32)
                               + 1000 * q + rank for q in range(size)])
        np.testing.assert_array_equal(lists, want)
        algorithms = world[rank].values["algorithms"]
        assert algorithms.get("all_reduce/shm", 0) >= sum(
            c.op == "all_reduce" for c in cases(size)), algorithms
        assert algorithms.get("all_to_all/shm", 0) > 0, algorithms
        over_sockets = [k for k in algorithms if k.split("/")[1] in SOCKET_ALGORITHMS]
        assert not over_sockets, f"rank {rank} ran {over_sockets} over sockets"
    assert not failures, f"{len(failures)} wrong:\n" + "\n".join(failures[:40])
    assert against_gloo > 200
    assert "uneven_lists" not in str(world[world_size - 1].arrays.keys())


@pytest.mark.timeout(60)
def test_every_device_mesh_dimension_runs_over_shared_memory():
    world = run_world("tests.torch.group_workers:mesh_dimensions", 4, timeout=45)
    for rank in range(4):
        got = world[rank].arrays
        # mesh [[0, 1], [2, 3]]: "tp" groups are its rows, "dp" groups its columns
        np.testing.assert_array_equal(got["tp"], np.full(4, rank + (rank ^ 1) + 2, np.float32))
        np.testing.assert_array_equal(got["dp"], np.full(4, rank + (rank ^ 2) + 2, np.float32))
        values = world[rank].values
        assert values["algorithms"].get("all_reduce/shm", 0) >= 2, values["algorithms"]
        assert values["shm_groups"]["arenas"] == 2, values["shm_groups"]


@pytest.mark.timeout(120)
def test_destroying_a_subgroup_frees_its_shared_memory():
    world = run_world("tests.torch.group_workers:destroyed_subgroup", 2, timeout=45)
    for rank in range(2):
        values = world[rank].values
        assert values["sum"] == values["world_sum"] == 2.0
        assert values["used"]["arenas"] == 1 and values["used"]["mapped_bytes"] > 1 << 20
        assert values["destroyed"] == {"arenas": 0, "mapped_bytes": 0}
