"""Rank-side functions of tests/dist/test_hierarchical.py: the collective table on a world
whose ranks claim different hosts (RINGRT_HOST_ID), so the two-level algorithms run on one
machine (tcp over loopback between "hosts", shared memory or ipc inside one)."""

from __future__ import annotations

import ringrt as dist
from tests.dist.cases import Case, cases, make_input
from tests.dist.workers import run_case


def _chosen() -> dict:
    return dist.stats()["algorithms"]


def hierarchical_matrix(rank: int, world: int, big: bool = False, subgroup=None):
    """Every case of cases.cases(world) on the world; then, if ``subgroup`` (global ranks)
    is given, the table of that size on a subgroup (non-members run nothing)."""
    dist.init_process_group(timeout=60)
    from ringrt.distributed import _world     # debug accessor: was the host arena made?

    results = {case.name: run_case(case, rank, world) for case in cases(world, big)}
    if subgroup is not None:
        group = dist.new_group(subgroup)
        if rank in subgroup:
            results.update(_subgroup_cases(rank, subgroup, group))
    dist.barrier()
    values = {"algorithms": _chosen(), "host_arena": _world.comm.host_arena is not None,
              "host_cores": _world.host_cores,
              "group_arenas": dist.stats()["shm_groups"]["arenas"]}
    dist.destroy_process_group()
    return {**results, **values}


ROOTLESS = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
            "reduce_scatter_tensor", "all_to_all", "all_to_all_single")


def subgroup_cases(size: int):
    """The cases run on a subgroup: the rootless ones of the table, then broadcast and
    reduce from every member (``sub/{op}/root{i}``, i the root's group rank)."""
    return [case for case in cases(size, False) if case.op in ROOTLESS]


def _subgroup_cases(rank: int, subgroup: list[int], group) -> dict:
    me = subgroup.index(rank)
    results = {f"sub/{case.name}": run_case(case, me, len(subgroup), group=group)
               for case in subgroup_cases(len(subgroup))}
    for root, global_root in enumerate(subgroup):
        for size in (5, 300_003):
            x = rooted_input(me, root, size)
            dist.broadcast(x, src=global_root, group=group)
            results[f"sub/broadcast/root{root}/{size}"] = x
            x = rooted_input(me, root, size)
            dist.reduce(x, dst=global_root, group=group)
            results[f"sub/reduce/root{root}/{size}"] = x
    return results


def rooted_input(group_rank: int, root: int, size: int):
    return make_input(Case(f"rooted/{root}/{size}", "reduce", "float32", size), group_rank)


HIERARCHICAL = ("all_reduce=hierarchical,broadcast=hierarchical,reduce=hierarchical,"
                "all_gather=hierarchical,barrier=hierarchical")
FLAT = "all_reduce=ring,broadcast=chain,reduce=chain,all_gather=ring"


def float_sums(rank: int, world: int, sizes=(1000, 300_003)):
    """all_reduce of random (non-integer) float32 data, forced two-level then forced flat:
    ``{two_level,flat}/{size}`` for the parent to compare (rounding may differ)."""
    import os

    import numpy as np

    dist.init_process_group(timeout=60)
    out = {}
    for setting, algo in (("two_level", HIERARCHICAL), ("flat", FLAT)):
        os.environ["RINGRT_ALGO"] = algo
        for size in sizes:
            x = np.random.default_rng(rank * 7919 + size).standard_normal(size) \
                .astype(np.float32)
            dist.all_reduce(x)
            out[f"{setting}/{size}"] = x
    os.environ.pop("RINGRT_ALGO")
    out["algorithms"] = _chosen()
    dist.destroy_process_group()
    return out


def own_subgroup_failures(rank: int, subgroup: list[int], results: dict) -> list[str]:
    """This rank's wrong subgroup results (the netlab worker checks its own)."""
    import numpy as np

    from tests.dist.cases import expected_for_rank, same_bits

    me, size = subgroup.index(rank), len(subgroup)
    failures = [f"sub/{case.name}" for case in subgroup_cases(size)
                if not same_bits(results[f"sub/{case.name}"],
                                 expected_for_rank(case, size, me)
                                 .reshape(results[f"sub/{case.name}"].shape))]
    for root in range(size):
        for count in (5, 300_003):
            inputs = [rooted_input(i, root, count) for i in range(size)]
            want = np.sum(inputs, axis=0, dtype=np.float32) if me == root else inputs[me]
            if not np.array_equal(results[f"sub/broadcast/root{root}/{count}"], inputs[root]):
                failures.append(f"sub/broadcast/root{root}/{count}")
            if not np.array_equal(results[f"sub/reduce/root{root}/{count}"], want):
                failures.append(f"sub/reduce/root{root}/{count}")
    return failures


def barrier_waits(rank: int, world: int, late: int, delay: float = 1.0):
    """Rank ``late`` enters the barrier ``delay`` seconds after the others; every rank
    returns when it left the barrier (wall clock)."""
    import time

    dist.init_process_group(timeout=30)
    dist.barrier()
    entered = time.time()
    if rank == late:
        time.sleep(delay)
        entered = time.time()
    dist.barrier()
    left = time.time()
    dist.destroy_process_group()
    return {"left": left, "entered": entered}
