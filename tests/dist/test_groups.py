"""Subgroups over shared memory: the case table of test_collectives on subgroups, against
NumPy, with the algorithm counts proving shared memory ran; uneven all_to_all; the memory a
job maps for many groups stays under the bound docs/groups.md states."""

import numpy as np
import pytest

from ringrt._comm.shm import CONTROL_BYTES
from tests.dist.cases import expected_for_rank, same_bits
from tests.dist.group_workers import group_cases, uneven_counts, uneven_input
from tests.world import run_world

SHM_OPS = ("all_reduce", "broadcast", "reduce", "all_gather", "reduce_scatter", "gather",
           "scatter", "all_to_all")


def _check(world, plan: dict, world_size: int) -> None:
    failures = []
    for rank in range(world_size):
        got = world[rank].arrays
        algorithms = world[rank].values["algorithms"]
        expected_shm = dict.fromkeys(SHM_OPS, 0)
        for label, members in plan["groups"].items():
            if rank not in members:
                continue
            me, size = members.index(rank), len(members)
            for case in group_cases(size, plan["big"]):
                want = expected_for_rank(case, size, me)
                mine = got[f"{label}/{case.name}"]
                if mine.size != want.size or not same_bits(mine, want.reshape(mine.shape)):
                    failures.append(f"{label}/{case.name} rank {rank}: got {mine.ravel()[:6]} "
                                    f"want {want.ravel()[:6]}")
                kind = case.op.replace("_into_tensor", "").replace("_tensor", "") \
                    .replace("_single", "")
                expected_shm[kind] += 1
            for salt, dtype in enumerate(("float32", "int64", "uint8")):
                want = np.concatenate([uneven_input(q, me, size, dtype, salt)
                                       for q in range(size)])
                if not np.array_equal(got[f"{label}/uneven/{dtype}"], want):
                    failures.append(f"{label}/uneven/{dtype} rank {rank}")
                expected_shm["all_to_all"] += 1
        for op, count in expected_shm.items():
            # every group op of the table ran over shared memory (gather and scatter on
            # sockets below 64 KiB when ranks outnumber cores: choice.SHM_FROM_OVERSUBSCRIBED)
            ran = algorithms.get(f"{op}/shm", 0)
            if op in ("gather", "scatter"):
                ran += algorithms.get(f"{op}/direct", 0)
            if ran != count:
                failures.append(f"rank {rank}: {op} ran {ran} times over shared memory "
                                f"(or direct), expected {count}: {algorithms}")
    assert not failures, f"{len(failures)} wrong:\n" + "\n".join(failures[:30])


@pytest.mark.timeout(150)
def test_subgroup_tables_world_4_disjoint_pairs_at_once_then_one_without_rank_0():
    plan = {"groups": {"low": [0, 1], "high": [2, 3], "no0": [1, 2, 3]},
            "stages": [["low", "high"], ["no0"]], "big": True}
    world = run_world("tests.dist.group_workers:group_tables", 4, timeout=130,
                      args={"plan": plan})
    _check(world, plan, 4)


@pytest.mark.timeout(150)
def test_subgroup_table_world_3_small_group_slots():
    """Slots capped at 64 KiB: the big cases take many pieces through a small slot."""
    plan = {"groups": {"no0": [1, 2]}, "stages": [["no0"]], "big": True}
    world = run_world("tests.dist.group_workers:group_tables", 3, timeout=130,
                      args={"plan": plan},
                      env={"RINGRT_SHM_GROUP_SLOT_BYTES": str(64 * 1024)})
    _check(world, plan, 3)
    for rank in (1, 2):
        assert world[rank].values["shm_groups"]["mapped_bytes"] == 2 * (CONTROL_BYTES + 65536)


@pytest.mark.timeout(60)
def test_many_groups_map_little_until_used():
    """40 groups: 4 KiB a member until used; a 4-byte op grows a slot to 64 KiB, a 1 MiB
    all_reduce to at most 2 x (2 MiB + 128 B) rounded up to 64 KiB (docs/groups.md)."""
    count, world_size = 20, 3
    world = run_world("tests.dist.group_workers:many_groups", world_size, timeout=50,
                      args={"count": count})
    for rank in range(world_size):
        values, arrays = world[rank].values, world[rank].arrays
        pairs = sum(1 for i in range(count) if rank in (i % world_size, (i + 1) % world_size))
        arenas = count + pairs
        members = count * world_size + pairs * 2
        assert values["after_creation"] == {"arenas": arenas,
                                            "mapped_bytes": members * CONTROL_BYTES}
        small_bound = members * (CONTROL_BYTES + (64 << 10))
        big_slot = -(-2 * (2 * (1 << 20) + 128) // (64 << 10)) * (64 << 10)
        bound = small_bound + world_size * big_slot
        assert values["after_use"]["arenas"] == arenas
        assert values["after_use"]["mapped_bytes"] <= bound
        np.testing.assert_array_equal(arrays["big"], np.full(4, world_size, np.float32))
        assert values["algorithms"]["all_reduce/shm"] == arenas + 1


@pytest.mark.timeout(60)
def test_a_slot_that_cannot_grow_fails_the_op_on_every_member_then_recovers():
    world = run_world("tests.dist.group_workers:growth_fails_then_recovers", 3, timeout=45)
    for rank in range(3):
        first = world[rank].values["first"]
        assert first.startswith("DistError") and "No space left" in first, first
        assert "RINGRT_SHM_GROUP_SLOT_BYTES" in first, first
        np.testing.assert_array_equal(world[rank].arrays["y"], np.full(4, 6.0, np.float32))
        assert world[rank].values["algorithms"]["all_reduce/shm"] == 2


@pytest.mark.timeout(60)
def test_a_destroyed_subgroup_frees_its_shared_memory_and_refuses_ops():
    world = run_world("tests.dist.group_workers:destroyed_group_frees_memory", 3, timeout=45)
    for rank in range(3):
        values = world[rank].values
        assert values["sum"] == values["world_sum"] == values["new_sum"] == 3.0
        assert values["used"]["arenas"] == 1 and values["used"]["mapped_bytes"] > 1 << 20
        assert values["destroyed"] == {"arenas": 0, "mapped_bytes": 0}
        assert values["refused"].startswith("NotInitializedError: all_reduce on rank")
        assert "was destroyed on this rank" in values["refused"]
        assert values["after_new"]["arenas"] == 1
