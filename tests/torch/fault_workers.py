"""Rank-side functions for the torch fault tests: bad input, mismatches, a lost peer during
DDP's backward, timeouts (run by tests/world.py)."""

from __future__ import annotations

import datetime
import functools
import os
import signal

import torch
import torch.distributed as dist

import ringrt.torch  # noqa: F401 - registers the backend
from ringrt import errors
from tests._outcome import outcome as _outcome


def _bad_calls(world: int) -> dict:
    """name -> (bad call made by rank 1, the matching good call every rank makes)."""
    def gather_into(n):
        return lambda: dist.all_gather_into_tensor(torch.empty(n), torch.ones(4))

    def gather_list(n, dtype=torch.float32):
        return lambda: dist.all_gather([torch.empty(4, dtype=dtype) for _ in range(n)],
                                       torch.ones(4))
    return {
        "not_cpu": (lambda: dist.all_reduce(torch.ones(8, device="meta")),
                    lambda: dist.all_reduce(torch.ones(8))),
        "not_contiguous": (lambda: dist.all_reduce(torch.ones(16)[::2]),
                           lambda: dist.all_reduce(torch.ones(8))),
        "sparse": (lambda: dist.all_reduce(torch.ones(8).to_sparse()),
                   lambda: dist.all_reduce(torch.ones(8))),
        "dtype": (lambda: dist.all_reduce(torch.ones(8, dtype=torch.float8_e4m3fn)),
                  lambda: dist.all_reduce(torch.ones(8))),
        "avg_on_ints": (lambda: dist.all_reduce(torch.ones(8, dtype=torch.int64),
                                                op=dist.ReduceOp.AVG),
                        lambda: dist.all_reduce(torch.ones(8, dtype=torch.int64))),
        "list_length": (gather_list(world + 1), gather_list(world)),
        "list_dtype": (gather_list(world, torch.float64), gather_list(world)),
        "output_size": (gather_into(4 * world + 1), gather_into(4 * world)),
        "async_bad": (lambda: dist.all_reduce(torch.ones(16)[::2], async_op=True).wait(),
                      lambda: dist.all_reduce(torch.ones(8), async_op=True).wait()),
        "split_sizes": (lambda: dist.all_to_all_single(torch.empty(world), torch.ones(world),
                                                       [1] * world, [2] * world),
                        lambda: dist.all_to_all_single(torch.empty(world), torch.ones(world))),
    }


def bad_input(rank: int, world: int) -> dict:
    """Rank 1 makes each mistake, catches it and makes the good call; the others only make
    the good call. The rejection is local: everyone's good call succeeds and the group
    keeps working (a checking all_reduce after each)."""
    dist.init_process_group("ringrt", timeout=datetime.timedelta(seconds=20))
    out = {}
    for name, (bad, good) in _bad_calls(world).items():
        if rank == 1:
            out[name] = _outcome(bad)
        out[name + "/retry"] = _outcome(good)
        check = torch.full((3,), float(rank))
        dist.all_reduce(check)
        out[name + "/after"] = check.tolist()
    dist.destroy_process_group()
    return out


MISMATCHES = {
    "count": lambda rank, g: dist.all_reduce(torch.ones(9 if rank == 1 else 8), group=g),
    "dtype": lambda rank, g: dist.all_reduce(
        torch.ones(8, dtype=torch.bfloat16 if rank == 1 else torch.int16), group=g),
    "op": lambda rank, g: dist.broadcast(torch.ones(8), src=0, group=g) if rank == 1
    else dist.all_reduce(torch.ones(8), group=g),
    "async": lambda rank, g: dist.all_reduce(torch.ones(100_000 if rank == 1 else 99_999),
                                             group=g, async_op=True).wait(),
}


def mismatch(rank: int, world: int) -> dict:
    """Rank 1 calls each op differently, on a fresh group of every rank (a mismatch breaks
    the group it happens in), the last on the world group itself (shared memory); every rank
    must raise CollectiveMismatchError naming the ranks, then again on the broken group."""
    dist.init_process_group("ringrt", timeout=datetime.timedelta(seconds=20))
    out = {}
    kinds = list(MISMATCHES)
    for kind in kinds:
        group = None if kind == kinds[-1] else dist.new_group(backend="ringrt")
        out[kind] = _outcome(functools.partial(MISMATCHES[kind], rank, group))
        out[kind + "/follow_up"] = _outcome(
            functools.partial(dist.all_reduce, torch.ones(2), group=group))
        try:
            dist.barrier(group=group)
            out[kind + "/named"] = []
        except errors.CollectiveMismatchError as exc:
            out[kind + "/named"] = exc.ranks
    dist.destroy_process_group()
    return out


def peer_lost_in_backward(rank: int, world: int, how: str) -> dict:
    """The last rank dies (SIGKILL, or an unhandled exception) after the forward; the
    survivors' ``loss.backward()`` (DDP all-reducing buckets) must raise naming it, fast."""
    dist.init_process_group("ringrt", timeout=datetime.timedelta(seconds=120))
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4)),
        bucket_cap_mb=0.01)
    loss = model(torch.randn(8, 64)).sum()
    dist.barrier()
    victim = world - 1
    if rank == victim:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("boom on purpose")
    backward = _outcome(loss.backward)
    following = _outcome(lambda: dist.all_reduce(torch.ones(4)))
    waited = _outcome(lambda: dist.all_reduce(torch.ones(4), async_op=True).wait())
    dist.destroy_process_group()
    return {"backward": backward, "following": following, "waited": waited}


def timeouts(rank: int, world: int) -> dict:
    """Rank 1 stays alive but never joins rank 0's ops: they must time out naming it, as the
    named ringrt error from the torch call, from ``work.wait()``, from the future (quoting
    it), first for an async op on a group of both ranks, then for a blocking one on the
    world group."""
    dist.init_process_group("ringrt", timeout=datetime.timedelta(seconds=2))
    store = dist.distributed_c10d._get_default_store()
    both = dist.new_group(backend="ringrt", timeout=datetime.timedelta(seconds=2))
    if rank == 1:
        store.wait(["rank0-done"], datetime.timedelta(seconds=60))
        dist.destroy_process_group()
        return {}
    work = dist.all_reduce(torch.ones(4), group=both, async_op=True)
    out = {"work": _outcome(work.wait), "future": _outcome(work.get_future().wait),
           "completed": work.is_completed(), "exception": type(work.exception()).__name__,
           "sync": _outcome(lambda: dist.all_reduce(torch.ones(4)))}
    try:
        dist.all_reduce(torch.ones(4))
    except errors.TimeoutError as exc:
        out["again"] = [type(exc).__name__, exc.ranks, isinstance(exc, TimeoutError)]
    store.set("rank0-done", b"1")
    dist.destroy_process_group()
    return out
