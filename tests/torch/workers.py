"""Rank-side functions for tests/torch (run by tests/world.py in fresh processes).

Every worker joins with ``dist.init_process_group("ringrt")`` through the harness's env://
(ringrt's store, as under ringrun) unless it says otherwise, and builds a gloo group over
the same ranks in the same job to run the same calls on, for comparison.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import ringrt.torch  # noqa: F401 - registers the backend
from tests.torch.cases import (
    as_numpy,
    block_input,
    cases,
    make_input,
    torch_dtype,
    torch_op,
    uneven_splits,
)


def _shaped(case, tensor: torch.Tensor) -> torch.Tensor:
    """The input in the case's memory layout (same logical values for 'channels_last')."""
    if case.layout == "channels_last":
        return tensor.reshape(2, 3, 4, 5).to(memory_format=torch.channels_last)
    if case.layout == "transposed":
        return tensor.reshape(3, 4).t()
    return tensor


def _unshaped(case, tensor: torch.Tensor) -> torch.Tensor:
    """Back to the input's element order, 1-D."""
    if case.layout == "transposed":
        return tensor.t().reshape(-1)
    return tensor.reshape(-1)


def _empty_like(case, like: torch.Tensor, fill=7) -> torch.Tensor:
    """An output like ``like``, in the case's layout (a transposed one stays transposed)."""
    if case.layout == "transposed":
        return torch.full((3, 4), fill, dtype=like.dtype).t()
    return torch.full_like(like, fill)


def run_case(case, rank: int, world: int, group) -> torch.Tensor:
    """Run one case on ``group``; returns what the parent compares (cases.expected)."""
    op = case.op
    x = _shaped(case, make_input(case, rank))
    if op == "all_reduce":
        dist.all_reduce(x, op=torch_op(case.redop), group=group)
        return _unshaped(case, x)
    if op == "reduce":
        dist.reduce(x, dst=case.root, op=torch_op(case.redop), group=group)
        return _unshaped(case, x)
    if op == "broadcast":
        if rank != case.root:
            x = _shaped(case, torch.zeros(case.size, dtype=torch_dtype(case.dtype)))
        dist.broadcast(x, src=case.root, group=group)
        return _unshaped(case, x)
    if op == "all_gather":
        out = [_empty_like(case, x) for _ in range(world)]
        dist.all_gather(out, x, group=group)
        return torch.stack([_unshaped(case, o) for o in out])
    if op == "all_gather_into_tensor":
        return _all_gather_into_tensor(case, x, world, group)
    if op == "gather":
        out = [torch.full_like(x, 7) for _ in range(world)] if rank == case.root else None
        dist.gather(x, out, dst=case.root, group=group)
        return torch.stack(out) if rank == case.root else x
    return _run_blocks(case, rank, world, group)


def _all_gather_into_tensor(case, x, world, group):
    if case.layout == "transposed":
        out = torch.full((3, world * 4), 7, dtype=x.dtype).t()
        dist.all_gather_into_tensor(out, x, group=group)
        return out.reshape(world, 4, 3).transpose(1, 2).reshape(world, -1)
    out = torch.full((world * case.size,), 7, dtype=x.dtype)
    dist.all_gather_into_tensor(out, x, group=group)
    return out.reshape(world, case.size)


def _run_blocks(case, rank, world, group):
    """The ops whose input is ``world`` blocks (scatter, all_to_all*, reduce_scatter*)."""
    op, blocks = case.op, block_input(case, rank, world)
    if op == "scatter":
        out = torch.full((case.size,), 7, dtype=blocks.dtype)
        dist.scatter(out, list(blocks) if rank == case.root else None, src=case.root,
                     group=group)
        return out
    if op == "all_to_all":
        out = [torch.full((case.size,), 7, dtype=blocks.dtype) for _ in range(world)]
        dist.all_to_all(out, [b.clone() for b in blocks], group=group)
        return torch.stack(out)
    if op == "all_to_all_single":
        out = torch.full_like(blocks, 7)
        dist.all_to_all_single(out, blocks, group=group)
        return out
    if op == "all_to_all_uneven":
        return _all_to_all_uneven(case, rank, world, group)
    if op == "reduce_scatter":
        inputs = [_shaped(case, b.clone()) for b in blocks]
        out = _shaped(case, torch.full((case.size,), 7, dtype=blocks.dtype))
        dist.reduce_scatter(out, inputs, op=torch_op(case.redop), group=group)
        return _unshaped(case, out)
    if op == "reduce_scatter_tensor":
        out = torch.full((case.size,), 7, dtype=blocks.dtype)
        dist.reduce_scatter_tensor(out, blocks.reshape(-1), op=torch_op(case.redop),
                                   group=group)
        return out
    raise AssertionError(op)


def _all_to_all_uneven(case, rank, world, group):
    sends = uneven_splits(world, rank)
    receives = [uneven_splits(world, sender)[rank] for sender in range(world)]
    inp = make_input(case, rank, sum(sends) * case.size).reshape(-1, case.size)
    out = torch.full((sum(receives), case.size), 7, dtype=inp.dtype)
    dist.all_to_all_single(out, inp, output_split_sizes=receives, input_split_sizes=sends,
                           group=group)
    return out.reshape(-1)


def collective_table(rank: int, world: int):
    """Every case of cases.cases(world) on the ringrt default group and on a gloo group."""
    dist.init_process_group("ringrt")
    gloo = dist.new_group(backend="gloo")
    results = {}
    for case in cases(world):
        results["ringrt/" + case.name] = as_numpy(run_case(case, rank, world, None))
        try:
            results["gloo/" + case.name] = as_numpy(run_case(case, rank, world, gloo))
        except (RuntimeError, ValueError, TypeError) as exc:
            results["gloo-refused/" + case.name] = str(exc)[:200]
    dist.barrier()
    dist.destroy_process_group()
    return results
