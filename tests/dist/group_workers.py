"""Rank-side functions of tests/dist/test_groups.py: subgroups over shared memory."""

from __future__ import annotations

import numpy as np

import ringrt as dist
from ringrt.errors import DistError
from tests.dist.cases import ALL_DTYPES, cases
from tests.dist.workers import run_case

# The dtypes the subgroup tables run (every dtype runs on the world in test_collectives; here
# one of each kind keeps the worlds short) and the sizes of the uneven all_to_all's blocks.
GROUP_DTYPES = ("bool", "int8", "uint64", "float16", "float32", "float64", "complex64")
UNEVEN_SIZES = (0, 1, 7, 1023, 70_001)


def group_cases(size: int, big: bool) -> list:
    """The world's case table for a group of ``size`` ranks, on GROUP_DTYPES."""
    assert set(GROUP_DTYPES) <= set(ALL_DTYPES)
    return [c for c in cases(size, big) if c.dtype in GROUP_DTYPES or "big" in c.name]


def uneven_counts(src: int, dst: int, size: int, salt: int = 0) -> int:
    """Elements group rank ``src`` sends to ``dst`` in the uneven all_to_all (every pair
    different, zeros included)."""
    return UNEVEN_SIZES[(src * 3 + dst * 5 + salt) % len(UNEVEN_SIZES)] + src


def uneven_input(src: int, dst: int, size: int, dtype: str, salt: int = 0) -> np.ndarray:
    count = uneven_counts(src, dst, size, salt)
    return ((np.arange(count) * 7 + src * 1000 + dst * 100) % 251).astype(dtype)


def _run_table(results: dict, label: str, group, members: list[int], big: bool) -> None:
    me, size = members.index(dist.get_rank()), len(members)
    for case in group_cases(size, big):
        results[f"{label}/{case.name}"] = run_case(case, me, size, group, members)
    for salt, dtype in enumerate(("float32", "int64", "uint8")):
        outs = [np.full(uneven_counts(q, me, size, salt), 9, dtype) for q in range(size)]
        dist.all_to_all(outs, [uneven_input(me, j, size, dtype, salt) for j in range(size)],
                        group=group)
        results[f"{label}/uneven/{dtype}"] = np.concatenate(outs)


def group_tables(rank: int, world: int, plan: dict):
    """Every group of ``plan`` (label -> global ranks) is made on every rank (new_group);
    groups listed together in one stage run their tables at the same time. Returns the
    results by ``label/case`` and this rank's algorithm counts."""
    dist.init_process_group(timeout=60)
    groups = {label: dist.new_group(members) for label, members in plan["groups"].items()}
    results = {}
    for stage in plan["stages"]:
        for label in stage:
            members = plan["groups"][label]
            if rank in members:
                _run_table(results, label, groups[label], members, plan["big"])
        dist.barrier()
    stats = dist.stats()
    dist.destroy_process_group()
    return {**results, "algorithms": stats["algorithms"], "shm_groups": stats["shm_groups"]}


def many_groups(rank: int, world: int, count: int):
    """``count`` groups of every rank and ``count`` pairs; each used once with a 4-byte
    all_reduce, one of them with a 1 MiB one: the shared memory mapped for them."""
    dist.init_process_group(timeout=60)
    made, sums = [], []
    for i in range(count):
        made.append(dist.new_group(None))
        made.append(dist.new_group([i % world, (i + 1) % world]))
    after_creation = dist.stats()["shm_groups"]
    for group in made:
        x = np.ones(1, np.float32)
        dist.all_reduce(x, group=group)
        sums.append(x[0] if dist.get_rank(group) >= 0 else 0.0)
    big = np.ones(1 << 18, np.float32)          # 1 MiB
    dist.all_reduce(big, group=made[0])
    stats = dist.stats()
    dist.destroy_process_group()
    return {"after_creation": after_creation, "after_use": stats["shm_groups"],
            "sums": np.array(sums), "big": big[:4], "algorithms": stats["algorithms"]}


def growth_fails_then_recovers(rank: int, world: int):
    """Rank 1 cannot make a bigger slot (as with /dev/shm full) for the group's first op:
    every member raises DistError; once it can, the same group works."""
    from ringrt._comm import group_shm

    dist.init_process_group(timeout=30)
    group = dist.new_group(list(range(world)))
    real = group_shm.map_private

    def full(path, size, create):
        if create:
            raise OSError(28, "No space left on device (test)")
        return real(path, size, create)

    if rank == 1:
        group_shm.map_private = full
    x = np.ones(1 << 16, np.float32)
    try:
        dist.all_reduce(x, group=group)
        first = "ok"
    except dist.errors.DistError as exc:
        first = f"{type(exc).__name__}: {exc}"
    group_shm.map_private = real
    y = np.full(1 << 16, rank + 1.0, np.float32)
    dist.all_reduce(y, group=group)
    algorithms = dist.stats()["algorithms"]
    dist.destroy_process_group()
    return {"first": first, "y": y[:4], "algorithms": algorithms}


def destroyed_group_frees_memory(rank: int, world: int):
    """A subgroup used with a 1 MiB all_reduce, then destroyed: its shared memory is unmapped,
    an op on it raises on this rank, the world and a new group still work."""
    dist.init_process_group(timeout=30)
    group = dist.new_group(list(range(world)))
    big = np.ones(1 << 18, np.float32)
    dist.all_reduce(big, group=group)
    used = dist.stats()["shm_groups"]
    dist.destroy_process_group(group)
    dist.destroy_process_group(group)                   # twice: nothing more
    destroyed = dist.stats()["shm_groups"]
    try:
        dist.all_reduce(np.ones(1, np.float32), group=group)
        refused = ""
    except DistError as exc:
        refused = f"{type(exc).__name__}: {exc}"
    x = np.ones(4, np.float32)
    dist.all_reduce(x)
    again = dist.new_group(list(range(world)))
    y = np.ones(4, np.float32)
    dist.all_reduce(y, group=again)
    after_new = dist.stats()["shm_groups"]
    dist.destroy_process_group()
    return {"used": used, "destroyed": destroyed, "refused": refused, "after_new": after_new,
            "sum": float(big[0]), "world_sum": float(x[0]), "new_sum": float(y[0])}
