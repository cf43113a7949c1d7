"""Rank-side functions of tests/torch/test_groups.py: torch subgroups on the "ringrt" backend
over shared memory, next to gloo subgroups of the same ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist

import ringrt
import ringrt.torch  # noqa: F401 - registers the backend
from tests.torch.cases import as_numpy, cases
from tests.torch.workers import run_case


def uneven_list_sizes(sender: int, receiver: int) -> int:
    """Elements ``sender`` sends ``receiver`` in the list all_to_all (zeros included)."""
    return (0, 3, 1000, 70_001, 1)[(sender * 2 + receiver) % 5]


def _uneven_lists(rank: int, size: int, group) -> torch.Tensor:
    inputs = [torch.arange(uneven_list_sizes(rank, j), dtype=torch.float32) + 1000 * rank + j
              for j in range(size)]
    outputs = [torch.full((uneven_list_sizes(q, rank),), -1.0) for q in range(size)]
    dist.all_to_all(outputs, inputs, group=group)
    return torch.cat(outputs)


def subgroup_table(rank: int, world: int):
    """The torch case table on ``new_group(ranks 0..world-2)`` over ringrt and over gloo
    (group ranks equal global ranks, so the table's roots serve both), plus an all_to_all of
    lists of different sizes; returns the results and ringrt's algorithm counts."""
    dist.init_process_group("ringrt")
    members = list(range(world - 1))
    ours = dist.new_group(members, backend="ringrt")
    gloo = dist.new_group(members, backend="gloo")
    results = {}
    if rank in members:
        size = len(members)
        for case in cases(size):
            results["ringrt/" + case.name] = as_numpy(run_case(case, rank, size, ours))
            try:
                results["gloo/" + case.name] = as_numpy(run_case(case, rank, size, gloo))
            except (RuntimeError, ValueError, TypeError):
                pass
        # gloo refuses lists whose sizes differ by peer ("invalid tensor size"): this one is
        # checked against the reference only (split sizes are checked against gloo too)
        results["ringrt/uneven_lists"] = as_numpy(_uneven_lists(rank, size, ours))
    algorithms = ringrt.stats()["algorithms"]
    dist.barrier()
    dist.destroy_process_group()
    return {**results, "algorithms": algorithms}


def mesh_dimensions(rank: int, world: int):
    """A 2x2 DeviceMesh ("dp", "tp"): an all_reduce on each dimension's group; returns the
    sums and what ringrt ran them on."""
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("ringrt")
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    out = {}
    for name in ("dp", "tp"):
        x = torch.full((1 << 18,), float(rank + 1))           # 1 MiB
        dist.all_reduce(x, group=mesh.get_group(name))
        out[name] = x[:4].numpy()
    stats = ringrt.stats()
    dist.barrier()
    dist.destroy_process_group()
    return {**out, "algorithms": stats["algorithms"], "shm_groups": stats["shm_groups"]}


def destroyed_subgroup(rank: int, world: int):
    """``dist.destroy_process_group(subgroup)`` frees the ringrt subgroup's shared memory on
    this rank; the world group goes on working."""
    dist.init_process_group("ringrt")
    sub = dist.new_group(list(range(world)), backend="ringrt")
    x = torch.ones(1 << 18)                                   # 1 MiB: the slot grows
    dist.all_reduce(x, group=sub)
    used = ringrt.stats()["shm_groups"]
    dist.destroy_process_group(sub)
    destroyed = ringrt.stats()["shm_groups"]
    y = torch.ones(4)
    dist.all_reduce(y)
    dist.barrier()
    dist.destroy_process_group()
    return {"used": used, "destroyed": destroyed, "sum": float(x[0]), "world_sum": float(y[0])}
