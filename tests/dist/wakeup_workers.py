"""Rank functions of ``test_wakeups.py``: many back-to-back shared-memory ops, checked."""

from __future__ import annotations

import numpy as np

import ringrt as dist

LARGE_BYTES = 3 << 20          # x world >= 2 ranks: over 4 MiB, the pieced two-phase path


def back_to_back(rank: int, world: int, rounds: int, large_every: int):
    """``rounds`` rounds of all_reduce 4 B, broadcast 64 B, barrier and a p2p ring exchange,
    with a large all_reduce every ``large_every`` rounds; every result checked."""
    dist.init_process_group(timeout=60)
    small = np.empty(1, np.float32)
    block = np.empty(16, np.float32)
    large = np.empty(LARGE_BYTES // 4, np.float32)
    received = np.empty(4, np.int32)
    wrong = 0
    expected_sum = world * (world + 1) / 2
    for i in range(rounds):
        small[0] = rank + 1
        dist.all_reduce(small)
        wrong += small[0] != expected_sum
        block[:] = i if rank == i % world else -1
        dist.broadcast(block, src=i % world)
        wrong += bool((block != i).any())
        dist.barrier()
        work = dist.isend(np.full(4, rank * 1000 + i, np.int32), (rank + 1) % world)
        dist.recv(received, (rank - 1) % world)
        work.wait()
        wrong += bool((received != ((rank - 1) % world) * 1000 + i).any())
        if i % large_every == 0:
            large[:] = rank + 1
            dist.all_reduce(large)
            wrong += int(np.count_nonzero(large != expected_sum))
    stats = dist.stats()
    dist.destroy_process_group()
    return {"wrong": int(wrong), "shm": stats["shm"], "algorithms": stats["algorithms"],
            "p2p": stats["p2p"]["path"]}
