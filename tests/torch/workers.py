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


def small_all_reduce_paths(rank: int, world: int):
    """``dist.all_reduce`` of small tensors on the "ringrt" default group and on gloo, and
    how many the backend ran straight from the tensor's memory (``run_memory``): plain
    tensors of the dtypes and reductions the C module compiles must; a parameter that
    requires grad too; a transposed or channels-last tensor, AVG, float16 and floating MAX
    (not compiled) go the general way, with the same results."""
    import numpy as np

    from ringrt import collectives
    from ringrt._algorithms.small_all_reduce import SmallAllReduce

    dist.init_process_group("ringrt")
    gloo = dist.new_group(backend="gloo")
    taken = [0]
    run_memory = SmallAllReduce.run_memory

    def counting(self, *args):
        done = run_memory(self, *args)
        taken[0] += done
        return done

    SmallAllReduce.run_memory = counting
    rng = np.random.default_rng(rank)
    results, expected_direct = {}, 0
    calls = [(dtype, op, 5) for dtype in ("float32", "float64", "int32", "int64", "uint8")
             for op in ("SUM", "PRODUCT", "MAX")] + \
        [("float32", "SUM", 0), ("float32", "SUM", 1000), ("int64", "BXOR", 9),
         ("float32", "AVG", 6), ("float16", "SUM", 6),
         ("float32", "transposed", 12), ("float32", "channels_last", 120),
         ("float32", "parameter", 7)]
    for dtype, op, size in calls:
        base = torch.from_numpy(rng.integers(-3, 4, size)).to(getattr(torch, dtype))
        if dtype == "float32" and op == "SUM":
            base = base + torch.from_numpy(rng.random(size, dtype=np.float32))
        outs = []
        for group in (None, gloo):
            t = base.clone()
            redop = dist.ReduceOp.SUM
            if op == "transposed":
                t = t.reshape(3, 4).t()
            elif op == "channels_last":
                t = t.reshape(2, 3, 4, 5).to(memory_format=torch.channels_last)
            elif op == "parameter":
                t = torch.nn.Parameter(t)
            else:
                redop = getattr(dist.ReduceOp, op)
            before = taken[0]
            with torch.no_grad():
                dist.all_reduce(t, op=redop, group=group)
            if group is None:
                direct = taken[0] - before
            outs.append(t.detach().contiguous().reshape(-1).to(torch.float64).numpy().copy())
        plain = dtype != "float16" and (op in ("SUM", "PRODUCT", "BXOR", "parameter") or
                                        op == "MAX" and not dtype.startswith("float"))
        expected_direct += plain
        results[f"{dtype}/{op}/{size}"] = np.stack(outs)
        results[f"{dtype}/{op}/{size}/direct"] = np.array([direct, plain])
    default = dist.distributed_c10d._get_default_group()
    backend = default if hasattr(default, "ringrt_group") else \
        default._get_backend(torch.device("cpu"))
    fast = collectives.fast_all_reduce(backend.ringrt_group)
    direct_calls = taken[0]
    # a completed Work someone holds is never handed out again (the backend reuses only
    # those nothing holds): its future still gives its own op's tensor after more ops
    opts = dist.AllreduceOptions()
    opts.asyncOp = False
    held_tensor = torch.ones(3)
    held = backend.allreduce([held_tensor], opts)
    others = [torch.ones(2) for _ in range(6)]
    works = {id(backend.allreduce([t], opts)) for t in others}
    results["held"] = np.array([held.get_future().value()[0] is held_tensor,
                                id(held) not in works, len(works) <= 4,
                                float(held_tensor.sum())])
    dist.destroy_process_group()
    return {**results, "direct": np.array([direct_calls, expected_direct, bool(fast)])}
