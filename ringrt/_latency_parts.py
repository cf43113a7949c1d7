"""The steps of one small shared-memory ``all_reduce``, each timed alone (``ringrt.debug``).

Every part below calls the code a 4-byte ``all_reduce`` over the world arena runs, in the
order it runs it, with nothing around it but ``timeit``'s loop: what is left of an op's
time once these are subtracted is waiting for the peers (the ticket's futex signal and
wait). A part never changes what a later op computes: it re-signals tickets with the values
they already hold (which may add to the wake-up counters of ``ringrt.stats()``), and rebuilds
the op's records without running the op.
"""

from __future__ import annotations

import functools
import time
import timeit

import numpy as np

from ringrt import _validate, collectives
from ringrt._algorithms import shm as shm_algorithms
from ringrt._comm.exchange import Exchange
from ringrt._comm.tickets import encode_ticket
from ringrt._comm.wire import OP_CODES
from ringrt._deadline import Deadline
from ringrt._observe.waits import WaitClock
from ringrt._reduce_ops import ReduceOp, combiner, finish


def _parts(pg, flat: np.ndarray) -> dict[str, object]:
    """name -> a no-argument callable doing that step once (on world-2 shared memory)."""
    rank, redop = pg.global_rank, ReduceOp.SUM
    algorithm = collectives._algorithm(pg, "all_reduce", flat.nbytes)
    if algorithm != "shm":
        raise ValueError(f"a 4-byte all_reduce runs {algorithm!r} here, not shared memory "
                         "(RINGRT_ALGO or RINGRT_NO_SHM set?): nothing to break down")
    spec = collectives._spec("all_reduce", "all_reduce", flat, algorithm, redop=redop)
    comm, arena, seq = pg.comm, pg.arena, pg._seq - 1        # the last op that ran
    exchange = Exchange(pg, seq, spec, Deadline(pg.timeout))
    op = exchange.shm
    peer = op.peers[0]
    half = op.half()
    combine = combiner(redop, flat.dtype)
    scratch = flat.copy()

    def record():
        entry = comm.observer.entered(pg.group_id, seq, spec)
        comm.observer.started(entry)
        comm.observer.finished(entry, None)

    def bookkeeping_after():
        start = time.perf_counter()
        op.done = True
        op.release_if_unfinished()
        comm.mailbox.finished(pg.group_id, seq, True)
        comm.counters.record("all_reduce", flat.nbytes, time.perf_counter() - start, False)

    def small_op_steps():
        shm_algorithms.fit(op, flat.nbytes, whole=True)
        op.half()
        op.arena.last_half_op == op.seq - 1      # noqa: B015  (acquire_half's test)
        op.half_done()                           # sets what the last op had set

    def peer_checks():                           # phase(): after the wait, before returning
        op._insist_same_op(peer)
        arena.published_bytes(peer) != op._published      # noqa: B015

    def slot_views():
        op.slot(rank, flat.dtype, flat.size, 0, half)
        op.slot(peer, flat.dtype, flat.size, 0, half)

    own = arena.own
    return {
        "resolve group": lambda: collectives._group(pg, "all_reduce"),
        "validate array and op": lambda: (
            _validate.array("all_reduce", flat, rank, writable=True),
            _validate.reduce_op("all_reduce", redop, flat.dtype, rank)),
        "choose algorithm (Decision)": lambda: collectives._algorithm(pg, "all_reduce",
                                                                      flat.nbytes),
        "OpSpec, body partial": lambda: (
            collectives._spec("all_reduce", "all_reduce", flat, algorithm, redop=redop),
            functools.partial(collectives._all_reduce, flat=flat.reshape(-1), redop=redop,
                              algorithm=algorithm)),
        "check_usable (twice)": lambda: (pg.check_usable("all_reduce"),
                                         pg.check_usable("all_reduce", seq)),
        "flight recorder (entered/started/finished)": record,
        "executor (run inline, job partial)": lambda: comm.executor.run(
            functools.partial(int), f"all_reduce (op #{seq})"),
        "Exchange, ShmOp, Deadline": lambda: Exchange(pg, seq, spec, Deadline(pg.timeout)),
        "publish op in shared memory": lambda: arena.publish(exchange.published),
        "combiner, AVG finish": lambda: (combiner(redop, flat.dtype),
                                         finish(redop, flat, pg.size)),
        "small-op steps (fit, half slot)": small_op_steps,
        "phase: peer's op and published call checked": peer_checks,
        "slot views": slot_views,
        "copy in (4 B)": lambda: scratch.__setitem__(Ellipsis, flat),
        "reduction (4 B)": lambda: combine(scratch, flat),
        "signal ticket + release (futex wakes)": lambda: (
            arena.signal(own.ticket.value), arena.signal_release(arena.released)),
        "op end (release, mailbox, counters)": bookkeeping_after,
    }


def all_reduce_wait(ops: int, group=None) -> float:
    """Microseconds per op that ``ops`` 4-byte float32 ``all_reduce`` calls over ``group``'s
    shared-memory arena spend in the arena's waits for the peers (spinning or asleep on the
    futex), timed as tracing times them; every member calls it at the same time."""
    pg = _member_with_arena(group)
    flat = np.zeros(1, dtype=np.float32)
    clock = WaitClock()
    pg.arena.time_waits_with(clock)
    try:
        for _ in range(ops):
            collectives.all_reduce(flat, group=pg)
    finally:
        pg.arena.time_waits_with(None)
    return clock.total / ops * 1e6


def _member_with_arena(group):
    pg = collectives._group(group, "all_reduce_part_costs")
    if pg is None or pg.arena is None or pg.size < 2:
        raise ValueError("this needs a member's group of 2+ ranks with shared memory")
    return pg


def all_reduce_part_costs(number: int, group=None) -> dict[str, float]:
    """Microseconds per call of each step of a 4-byte float32 ``all_reduce`` over
    ``group``'s shared-memory arena (default: the world), by ``timeit`` over ``number``
    calls, less an empty call's cost. Needs a group of at least two ranks on one host with
    an arena; every member must call it at the same time, between barriers."""
    pg = _member_with_arena(group)
    flat = np.ones(1, dtype=np.float32)
    collectives.all_reduce(flat, group=pg)                  # at least one op has run
    empty = timeit.timeit(lambda: None, number=number)
    return {name: max(0.0, (timeit.timeit(call, number=number) - empty) / number * 1e6)
            for name, call in _parts(pg, flat).items()}


def steps_only_times(ops: int, python_ns: int = 0, group=None) -> np.ndarray:
    """Nanoseconds of each of ``ops`` 4-byte float32 SUM all_reduces over ``group``'s arena
    (default: the world) made of the fast path's C steps alone (stage, signal, wait, check,
    reduce, release: ``SmallAllReduce._steps_in_c``), each after a fixed run of
    ``python_ns`` of plain Python work inside the timed span; no entry checks, flight record,
    publish or counters. What a small op's tail is on this machine for an op of that much
    Python: every member calls it at the same time with the same arguments. Needs the C
    module (``ValueError`` where it is not built or is switched off)."""
    pg = _member_with_arena(group)
    flat = np.zeros(1, dtype=np.float32)                  # sums stay 0
    collectives.all_reduce(flat, group=pg)                # the fast path is set up
    fast = collectives.fast_all_reduce(pg)
    kind = fast._kind(flat.dtype, ReduceOp.SUM) if fast else None
    if kind is None or kind[5] is None:
        raise ValueError("steps_only_times needs the fast path's C module (built, and "
                         "neither RINGRT_NO_NATIVE nor use_fast_path(native=False))")
    plan, arena = kind[5], pg.arena
    loops = _python_loops(python_ns)
    times = np.empty(ops, dtype=np.int64)
    clock = time.perf_counter_ns
    if not pg.claim_executor():
        raise RuntimeError("steps_only_times: another op of this group is running")
    try:
        seq = pg.take_seq()
        published = (pg.group_id + 1, seq, OP_CODES["all_reduce"], kind[1], 1, -1, kind[3], 1)
        arena.publish(published)                       # the same block on every rank
        for i in range(ops):
            start = clock()
            for _ in loops:
                pass
            fast._steps_in_c(plan, flat, 1, seq, None, published)
            times[i] = clock() - start
            arena.last_half_op, arena.released = seq, encode_ticket(seq, 2)
            if i + 1 < ops:
                seq = pg.take_seq()
    finally:
        pg.release_executor()
    return times


def _python_loops(python_ns: int) -> range:
    """A ``range`` whose empty ``for`` loop takes about ``python_ns`` here (a fixed amount
    of work, so that a stall inside it lengthens it, as it would an op's own Python)."""
    if python_ns <= 0:
        return range(0)
    probe = range(100_000)
    best = min(timeit.repeat(functools.partial(_run_loop, probe), number=1, repeat=5))
    per_loop_ns = best / len(probe) * 1e9
    return range(max(1, round(python_ns / per_loop_ns)))


def _run_loop(loops: range) -> None:
    for _ in loops:
        pass
