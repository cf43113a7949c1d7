"""Rank-side functions for the failure tests: bad input, mismatches, lost peers, timeouts."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

import ringrt as dist
from ringrt import errors
from tests._outcome import outcome as _outcome


def _bad_calls(world):
    """name -> (bad call made by rank 1, matching good call made by the others)."""
    x = np.ones(8, np.float32)
    read_only = np.ones(8, np.float32)
    read_only.setflags(write=False)
    return {
        "not_contiguous": (lambda: dist.all_reduce(np.ones((4, 4))[:, ::2]),
                           lambda: dist.all_reduce(np.ones((4, 2)))),
        "read_only": (lambda: dist.all_reduce(read_only), lambda: dist.all_reduce(x.copy())),
        "object_dtype": (lambda: dist.all_reduce(np.array([object()] * 8)),
                         lambda: dist.all_reduce(x.copy())),
        "not_an_array": (lambda: dist.all_reduce([1.0] * 8), lambda: dist.all_reduce(x.copy())),
        "wrong_list_length": (
            lambda: dist.all_gather([np.empty(8, np.float32)] * (world + 1), x),
            lambda: dist.all_gather([np.empty(8, np.float32) for _ in range(world)], x)),
        "root_out_of_range": (lambda: dist.broadcast(x.copy(), src=world + 5),
                              lambda: dist.broadcast(x.copy(), src=0)),
        "avg_on_ints": (lambda: dist.all_reduce(np.ones(8, np.int64), op=dist.ReduceOp.AVG),
                        lambda: dist.all_reduce(np.ones(8, np.int64))),
        "shape_mismatch": (
            lambda: dist.reduce_scatter_tensor(np.empty(3, np.float32), np.ones(8, np.float32)),
            lambda: dist.reduce_scatter_tensor(np.empty(2, np.float32),
                                               np.ones(2 * world, np.float32))),
        "not_serialisable": (lambda: dist.all_gather_object([None] * world, object()),
                             lambda: dist.all_gather_object([None] * world, 1)),
    }


def bad_input(rank: int, world: int):
    """Rank 1 makes each mistake in turn, catches the error and makes the correct call; the
    others only ever make the correct call. A rejected call is local: every rank's correct
    call must succeed, with the right result, and the group keeps working."""
    dist.init_process_group(timeout=20)
    results = {}
    for name, (bad, good) in _bad_calls(world).items():
        if rank == 1:
            results[name] = _outcome(bad)
        results[name + "/retry"] = _outcome(good)
        check = np.full(4, rank, np.int64)
        dist.all_reduce(check)
        big = np.full(600_000, rank, np.float32)     # large: the slot-reuse (acquire) path
        dist.all_reduce(big)
        results[name + "/after"] = int(check[0]) if (big == big[0]).all() and \
            big[0] == check[0] else -1
    dist.destroy_process_group()
    return results


def bad_input_then_other_op(rank: int, world: int):
    """Rank 1 makes a bad all_reduce, catches it, then calls broadcast instead of retrying:
    mismatch detection must name it on every rank, not hang."""
    dist.init_process_group(timeout=20)
    x = np.ones(8, np.float32)
    if rank == 1:
        _outcome(lambda: dist.all_reduce(np.ones((4, 4))[:, ::2]))
        outcome = _outcome(lambda: dist.broadcast(x, src=0))
    else:
        outcome = _outcome(lambda: dist.all_reduce(x))
    follow_up = _outcome(lambda: dist.barrier())
    dist.destroy_process_group()
    return {"outcome": outcome, "follow_up": follow_up}


def bad_input_uncaught(rank: int, world: int):
    """Rank 1's bad call is not caught: the rank dies, and the others, waiting in the matching
    call, must raise PeerLostError quoting the error within seconds."""
    dist.init_process_group(timeout=60)
    dist.barrier()
    if rank == 1:
        dist.all_reduce(np.ones((4, 4))[:, ::2])         # raises ValueError, uncaught
    pending = _outcome(lambda: dist.all_reduce(np.ones((4, 2))))
    dist.destroy_process_group()
    return {"pending": pending}


def mismatch(rank: int, world: int, kind: str):
    """Rank 1 calls a different op (or the same op differently) than the others."""
    dist.init_process_group(timeout=30)
    x = np.ones(10, np.float32)
    calls = {
        "op": lambda: dist.all_gather([np.empty(10, np.float32) for _ in range(world)], x)
        if rank == 1 else dist.all_reduce(x),
        "dtype": lambda: dist.all_reduce(np.ones(10, np.float64) if rank == 1 else x),
        "count": lambda: dist.all_reduce(np.ones(11 if rank == 1 else 10, np.float32)),
        "big_count": lambda: dist.all_reduce(np.ones(200_000 if rank == 1 else 100_000,
                                                     np.float32)),
        "root": lambda: dist.broadcast(x, src=1 if rank == 1 else 0),
        "redop": lambda: dist.all_reduce(x, op=dist.ReduceOp.MAX if rank == 1
                                         else dist.ReduceOp.SUM),
        # uneven all_to_all: rank 1 expects 3 elements from rank 0, which sends 2
        "uneven": lambda: dist.all_to_all(
            [np.empty(3 if rank == 1 and q == 0 else 2, np.float32) for q in range(world)],
            [np.ones(2, np.float32) for _ in range(world)]),
    }
    first = _outcome(calls[kind])
    follow_up = _outcome(lambda: dist.barrier())     # a broken group stays broken
    _stay_until_everyone_has(dist.get_store(), "mismatch/recorded", world)
    dist.destroy_process_group()
    return {"first": first, "follow_up": follow_up}


def _stay_until_everyone_has(store, key: str, world: int, limit_s: float = 20.0) -> None:
    """Leave only once every rank got here (counted in the store: the broken group cannot
    barrier). A rank whose part of the op completed learns of the mismatch at its next op;
    a peer that had already left would end that op with PeerLostError instead."""
    store.add(key, 1)
    end = time.monotonic() + limit_s
    while store.add(key, 0) < world and time.monotonic() < end:
        time.sleep(0.01)


def lose_a_peer(rank: int, world: int, how: str):
    """The last rank dies (SIGKILL or an unhandled exception) while the others are in an
    all_reduce; the survivors report how long the PeerLostError took."""
    dist.init_process_group(timeout=120)
    victim = world - 1
    dist.barrier()
    if rank == victim:
        time.sleep(0.3)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("boom on purpose")
    pending = _outcome(lambda: dist.all_reduce(np.ones(1000, np.float32)))
    following = _outcome(lambda: dist.all_reduce(np.ones(10, np.float32)))
    dist.destroy_process_group()
    return {"pending": pending, "following": following}


def never_arrives(rank: int, world: int):
    """The last rank is never started: rendezvous must time out naming it."""
    start = time.monotonic()
    try:
        dist.init_process_group(timeout=3)
    except errors.TimeoutError as exc:
        return {"error": type(exc).__name__, "ranks": exc.ranks, "message": str(exc),
                "builtin": isinstance(exc, TimeoutError), "took": time.monotonic() - start}
    return {"error": "none"}


def op_timeout(rank: int, world: int):
    """Rank 1 stays alive but never calls the op; rank 0 must time out naming it."""
    dist.init_process_group(timeout=2)
    if rank == 1:
        dist.get_store().get("rank0-done", timeout=30)
        dist.destroy_process_group()
        return {}
    result = _outcome(lambda: dist.all_reduce(np.ones(4)))
    exc_ranks = None
    try:
        dist.all_reduce(np.ones(4))
    except errors.DistError as exc:
        exc_ranks = [type(exc).__name__, getattr(exc, "ranks", None)]
    dist.get_store().set("rank0-done", b"1")
    dist.destroy_process_group()
    return {"result": result, "again": exc_ranks}


def wrong_token(rank: int, world: int):
    """Rank 1 has the wrong RINGRT_TOKEN: it is refused; rank 0 times out waiting for it."""
    outcome = _outcome(lambda: dist.init_process_group(timeout=4))
    if outcome[0] == "ok":
        dist.destroy_process_group()
    return {"outcome": outcome}
