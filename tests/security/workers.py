"""Rank-side work for the attack tests: collectives that must stay right while attacked.

Each rank writes its pid, then loops over all_reduce (small, inline and zero-copy sizes),
point-to-point around a ring and an object all-gather (socket paths even when the world
ops take shared memory), checking every result against the known answer. Rank 0 watches for
the attacker's "attacked" file and broadcasts when to stop, so every rank runs the same ops;
the loop goes on for ``AFTER`` rounds past the attack. Returns the number of wrong results,
the ops run, and ``ringrt.stats()``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import ringrt as dist

SIZES = (1, 1000, 100_000)          # 8 B; 8 KB inline; 800 KB zero-copy segments
AFTER = 10                          # rounds run after the attack finished
MAX_ROUNDS = 5000


def _round(rank: int, world: int, index: int) -> int:
    """One round of ops; returns how many results were wrong."""
    wrong = 0
    for size in SIZES:
        x = np.full(size, rank + 1 + index % 7, np.float64)
        dist.all_reduce(x)
        wrong += int(not (x == sum(r + 1 + index % 7 for r in range(world))).all())
    ring = np.full(8, rank * 1000 + index, np.int64)
    into = np.empty_like(ring)
    right, left = (rank + 1) % world, (rank - 1) % world
    sent = dist.isend(ring, right)
    dist.recv(into, left)
    sent.wait()
    wrong += int(not (into == left * 1000 + index).all())
    objects = [None] * world
    dist.all_gather_object(objects, {"rank": rank, "round": index})
    wrong += int(objects != [{"rank": r, "round": index} for r in range(world)])
    return wrong


def under_attack(rank: int, world: int, signal_dir: str) -> dict:
    signals = Path(signal_dir)
    dist.init_process_group(timeout=60)
    (signals / f"pid{rank}").write_text(str(os.getpid()))
    dist.barrier()
    if rank == 0:
        (signals / "ready").touch()
    wrong = rounds = after = 0
    attacked = False
    while after < AFTER and rounds < MAX_ROUNDS:
        wrong += _round(rank, world, rounds)
        rounds += 1
        flag = np.array([rank == 0 and (signals / "attacked").exists()], np.int64)
        dist.broadcast(flag, src=0)
        attacked = attacked or bool(flag[0])
        after += attacked
    poisoned = dist.get_store().check(["poisoned"])
    stats = dist.stats()
    dist.destroy_process_group()
    return {"wrong": wrong, "rounds": rounds, "attacked": attacked, "poisoned": poisoned,
            "stats": stats}


def mismatched_link_token(rank: int, world: int) -> dict:
    """Rank 1's data plane holds another token than rank 0's (as under torchrun, where the
    store does not check it): forming the group must fail fast, saying so, not time out."""
    import time

    from ringrt._comm.auth import LinkSecurity
    from ringrt._process_group import ProcessGroup
    from ringrt.store import Store

    store = Store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank=rank)
    token = os.environ["RINGRT_TOKEN"] if rank == 0 else "a-different-token"
    start = time.monotonic()
    try:
        group = ProcessGroup(store, rank, world, timeout=60, namespace="mismatch",
                             security=LinkSecurity(token))
        group.close(linger_s=0.5, goodbye=False)
        outcome = ["ok", ""]
    except Exception as exc:  # noqa: BLE001 - the test reads what was raised
        outcome = [type(exc).__name__, str(exc)]
    took = time.monotonic() - start
    store.close()
    return {"outcome": outcome, "took": took}
