"""Rank-side functions of the point-to-point tests (run by tests/world.py), on whichever path
the job picked: shared memory on one host, or sockets with ``RINGRT_P2P=sockets``."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

import ringrt as dist
from ringrt import errors
from ringrt._dtypes import BFLOAT16
from tests._outcome import outcome as _outcome

# (dtype, elements): empty, tiny, odd, past the first ring (64 KiB), past a grown ring (1 MiB)
SIZES = [(np.float32, 0), (np.int8, 1), (np.bool_, 4097), (np.complex64, 9_000),
         (BFLOAT16, 70_000), (np.float64, 300_000)]


def message(rank: int, index: int, dtype, count: int) -> np.ndarray:
    """What ``rank`` sends as its ``index``-th message: values that differ per rank and
    message, exact in every dtype."""
    values = (np.arange(count) % 7) + 3 * rank + index
    return (values % 2).astype(dtype) if dtype == np.bool_ else values.astype(dtype)


def matrix(rank: int, world: int):
    """Every point-to-point pattern the semantics promise, in one world; the parent checks
    each result against what the senders sent."""
    dist.init_process_group(timeout=30)
    right, left = (rank + 1) % world, (rank - 1) % world
    out = {"path": dist.stats()["p2p"]["path"]}
    # 1. isend everything before receiving anything, received in reverse tag order (the
    #    other tags wait in the stash or the mailbox), ringed around the world
    for index, (dtype, count) in enumerate(SIZES):
        dist.isend(message(rank, index, dtype, count), right, tag=index)
    for index, (dtype, count) in reversed(list(enumerate(SIZES))):
        got = np.empty(count, dtype)
        assert dist.recv(got, left, tag=index) == left
        out[f"ring{index}"] = got.view(np.uint16) if dtype == BFLOAT16 else got
    # 2. both neighbours isend many large messages at each other before either receives
    burst = [message(rank, 100 + i, np.float32, 600_000) for i in range(4)]
    for i, payload in enumerate(burst):
        dist.isend(payload, right, tag=200 + i)
        dist.isend(payload, left, tag=300 + i)
    from_left, from_right = [], []
    for i in range(4):
        from_left.append(np.empty(600_000, np.float32))
        from_right.append(np.empty(600_000, np.float32))
        works = [dist.irecv(from_left[-1], left, tag=200 + i),
                 dist.irecv(from_right[-1], right, tag=300 + i)]
        for work in works:
            work.wait()
    out["burst_left"] = np.stack(from_left)
    out["burst_right"] = np.stack(from_right)
    # 3. one sender, one tag, many messages: in order; big tags
    for i in range(50):
        dist.send(np.array([i], np.int64), right, tag=2**61)
    got = np.empty(1, np.int64)
    out["in_order"] = [int(dist.recv(got, left, tag=2**61) == left and got[0]) for _ in range(50)]
    # 4. any-source on rank 0, from every other rank, plus the stash: a tag-99 message
    #    waiting behind a tag-98 one
    if rank == 0:
        got = np.empty(1, np.int64)
        senders = [dist.recv(got, tag=99) for _ in range(world - 1)]
        values = sorted(int(dist.recv(got, src=s, tag=98) == s and got[0]) for s in senders)
        out["any_source"], out["any_values"] = sorted(senders), values
    else:
        dist.send(np.array([rank * 10], np.int64), 0, tag=98)
        dist.send(np.array([rank], np.int64), 0, tag=99)
    # 5. a subgroup of the first and last rank
    if world > 1:
        pair = dist.new_group([0, world - 1])
        if rank in (0, world - 1):
            peer = world - 1 if rank == 0 else 0
            dist.isend(np.full(5, rank, np.int32), peer, group=pair)
            got = np.empty(5, np.int32)
            out["subgroup"] = [dist.recv(got, peer, group=pair), int(got.sum())]
    # 6. an irecv polled with is_completed, and one completed by a callback alone
    got_polled, got_called = np.empty(3), np.empty(3)
    polled = dist.irecv(got_polled, left, tag=6)
    called = threading.Event()
    dist.irecv(got_called, left, tag=7).add_done_callback(lambda work: called.set())
    dist.send(np.full(3, rank + 0.5), right, tag=7)
    dist.send(np.full(3, rank + 0.25), right, tag=6)
    deadline = time.monotonic() + 20
    while not polled.is_completed() and time.monotonic() < deadline:
        pass
    out["polled"] = [polled.is_completed(), polled.result(), float(got_polled[0])]
    out["called"] = [called.wait(20), float(got_called[0])]
    # 7. a wrong receive buffer: the named error, and the channel carries on
    if world > 1:
        if rank == 1:
            dist.send(np.ones(4, np.float32), 0, tag=77)
            dist.send(np.full(2, 9, np.int16), 0, tag=77)
        if rank == 0:
            out["mismatch"] = _outcome(lambda: dist.recv(np.empty(4, np.float64), 1, tag=77))
            got = np.empty(2, np.int16)
            out["after_mismatch"] = [dist.recv(got, 1, tag=77), int(got.sum())]
    # 8. bad arguments are local: nothing was sent, the next calls match
    bad = {"to_self": lambda: dist.send(np.ones(1), rank),
           "from_self": lambda: dist.recv(np.ones(1), rank),
           "tag": lambda: dist.isend(np.ones(1), right, tag=-1),
           "read_only": lambda: dist.irecv(_read_only(), left),
           "not_array": lambda: dist.send([1.0], right)}
    out["bad"] = {name: _outcome(call)[0] for name, call in bad.items()}
    dist.barrier()
    out["stats"] = dist.stats()["p2p"]
    dist.destroy_process_group()
    return out


def _read_only() -> np.ndarray:
    array = np.ones(1)
    array.setflags(write=False)
    return array


def interleaved(rank: int, world: int):
    """A receive posted before a collective and completed after it, with the message sent
    after the collective: on one host it does not hold the collective back (on sockets the
    receive is an executor job, which would: not run there)."""
    dist.init_process_group(timeout=30)
    right, left = (rank + 1) % world, (rank - 1) % world
    got = np.empty(4, np.float32)
    pending = dist.irecv(got, left, tag=5)
    total = np.full(2, float(rank))
    dist.all_reduce(total)
    dist.isend(np.full(4, rank, np.float32), right, tag=5)
    pending.wait()
    async_sum = dist.all_reduce(np.ones(3), async_op=True)
    early = np.empty(1)
    dist.isend(np.array([rank + 0.5]), right, tag=8)
    dist.recv(early, left, tag=8)                   # while the async all_reduce may run
    async_sum.wait()
    dist.destroy_process_group()
    return {"got": got, "total": total, "early": early}


def faults(rank: int, world: int, fault: str):
    """Rank 0 receives from rank 1, which never sends (``timeout``) or is killed once rank 0
    waits (``kill``); rank 0 reports what its receive raised and when."""
    dist.init_process_group(timeout=3 if fault == "timeout" else 60)
    store = dist.get_store()
    if rank == 1:
        store.get("receiving", timeout=30)
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        store.get("rank0-done", timeout=30)
        dist.destroy_process_group()
        return {}
    store.set("receiving", b"1")       # lost before or during the receive: the same error
    outcome = _outcome(lambda: dist.recv(np.empty(4), 1, tag=1234))
    lost_send = _outcome(lambda: dist.send(np.empty(4), 1)) if fault == "kill" else None
    store.set("rank0-done", b"1")
    dist.destroy_process_group()
    return {"outcome": outcome, "lost_send": lost_send}
