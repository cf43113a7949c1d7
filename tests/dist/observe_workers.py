"""Rank functions of tests/dist/test_observe.py (flight recorder, timeline, RINGRT_DEBUG)."""

import os
import signal

import numpy as np

import ringrt as dist


def traced_ops(rank, world_size):
    """A few collectives of several kinds, point-to-point and an async op; ends normally."""
    dist.init_process_group(timeout=20)
    x = np.ones(256, dtype=np.float32)
    for _ in range(3):
        dist.all_reduce(x)
    dist.broadcast(np.zeros(8, dtype=np.int64), src=0)
    dist.all_reduce(np.ones(64 * 1024, dtype=np.float64), async_op=True).wait()
    if rank == 0:
        dist.send(np.arange(4.0), dst=1)
    elif rank == 1:
        dist.recv(np.empty(4), src=0)
    dist.barrier()
    stats = dist.stats()
    dist.destroy_process_group()
    return {"stats": stats}


def sigusr1_dump(rank, world_size):
    """Two ops, then this rank asks itself for a dump (as ringrun does to a hung job)."""
    dist.init_process_group(timeout=20)
    dist.all_reduce(np.ones(16))
    dist.broadcast(np.ones(4), src=0)
    os.kill(os.getpid(), signal.SIGUSR1)       # SIGUSR1-LINE: handled before the next bytecode
    dist.barrier()
    dist.destroy_process_group()


def mismatch(rank, world_size):
    """Rank world_size-1 calls broadcast where the others call all_reduce."""
    dist.init_process_group(timeout=20)
    dist.all_reduce(np.ones(4))
    if rank == world_size - 1:
        dist.broadcast(np.ones(4), src=0)
    else:
        dist.all_reduce(np.ones(4))
    dist.destroy_process_group()


def debug_decisions(rank, world_size):
    """all_reduce at sizes in three size classes, several times each (RINGRT_DEBUG=1)."""
    dist.init_process_group(timeout=20)
    for count in (100, 120, 100, 3000, 4000, 3000, 1 << 18, (1 << 18) + 1000):
        dist.all_reduce(np.ones(count, dtype=np.float32))
    dist.destroy_process_group()


def peer_dies(rank, world_size):
    """The last rank exits abruptly after one op; the others' next all_reduce loses it."""
    dist.init_process_group(timeout=20)
    dist.all_reduce(np.ones(4))
    if rank == world_size - 1:
        os._exit(3)
    dist.all_reduce(np.ones(4))
    dist.destroy_process_group()


def latency_parts(rank, world_size):
    """ringrt.debug's all_reduce parts and wait, then all_reduces that must still be right."""
    from ringrt import debug

    dist.init_process_group(timeout=20)
    parts = debug.all_reduce_part_costs(50)
    wait = debug.all_reduce_wait(20)
    sums = []
    for value in (1.0, 2.0):
        x = np.full(3, value * (rank + 1), dtype=np.float32)
        dist.all_reduce(x)
        sums.append(x.tolist())
    x = np.full(2, 4.0, dtype=np.float64)
    dist.all_reduce(x, op=dist.ReduceOp.AVG)
    sums.append(x.tolist())
    dist.destroy_process_group()
    return {"parts": parts, "wait": wait, "sums": sums}
