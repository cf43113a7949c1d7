"""A small all_reduce over shared memory in one call: the fast path of ``all_reduce``.

A small all_reduce on a group whose ranks share a host takes one phase (``shm._reduce_small``:
stage into this op's half slot, signal, wait for every peer's signal, sum the halves in rank
order, release). Through the general path each of those steps is a call into another object
(OpSpec, Exchange, ShmOp, Deadline, the executor, the flight recorder's three updates), and
those calls, not the copies, are most of the op's time at this size
(``python -m benchmarks.overhead.latency_breakdown``). :class:`SmallAllReduce` runs the same
steps, on the same words of the same arena and with the same bits, inline, and hands over to
the general machinery the moment anything is not routine:

- a peer not there yet: the arena's own wait (spin, then futex sleep, with the op's checks:
  mismatch notices, lost peers, the deadline), given a check built only then;
- a peer that published another call for this op: the same check raises
  CollectiveMismatchError on every rank, as the general path does;
- an array, reduction or size the fast path does not take, tracing (or waits being timed
  otherwise: ``ringrt.debug``), ``RINGRT_DEBUG``,
  ``RINGRT_ALGO``, an async op, or another op queued or running on the group's executor:
  :meth:`run` returns False before touching anything and the caller takes the general path
  (which also raises the right error for a bad argument).

A wait for the peers first spins inline (``INLINE_SPIN_SECONDS``). After a wake-up the
kernel may put two ranks on one core (it places a woken process near its waker) and leave
the other core idle for milliseconds while both are busy (each ran there a moment ago, so
moving one looks costly): then a rank spinning for its peer keeps the peer from running,
and each op takes two of the scheduler's turns until the kernel moves one (the tail
benchmark, ``benchmarks/overhead/tail_floor.py``, and docs/performance.md show the cost).
So each rank notes its CPU in its control block at every op, and the C steps, finding a
peer late by ``MOVE_AFTER_NS`` whose CPU is their own, move this rank to another allowed CPU
(``sched_setaffinity`` without that CPU, then with it again), once an op, counted as
``moves`` in ``ringrt.stats()["shm"]``. The Python steps (no C module) cannot read their
CPU cheaply and wait as before.

Every op still takes its sequence number, publishes its call (so a peer on the general path
compares it), gets a flight-recorder record with the user's call site, counts in
``ringrt.stats()`` and tells the mailbox it finished, as every op does.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ringrt import _native
from ringrt._algorithms.choice import forced
from ringrt._algorithms.shm import WHOLE_PIECE_TRAFFIC
from ringrt._comm.exchange import Exchange
from ringrt._comm.tickets import STEP_BITS, encode_ticket
from ringrt._comm.wakeups import MOVES, SPIN_SECONDS, SPINS, WAITS
from ringrt._comm.wire import DTYPE_CODES, OP_CODES
from ringrt._deadline import Deadline
from ringrt._observe.recorder import DONE, ENDED, RUNNING, STARTED, STATE
from ringrt._observe.site import site_of
from ringrt._process_group import OpSpec
from ringrt._reduce_ops import ReduceOp, finish, kernel

_ALL_REDUCE = OP_CODES["all_reduce"]
_SEQ_MASK = 0xFFFFFFFF >> STEP_BITS            # the part of seq a ticket keeps
_WORD, _HALF_WORD = 0xFFFFFFFF, 0x80000000     # tickets compare modulo 2**32 (tickets.reached)
# how long a wait spins before handing over to the arena's wait (which spins on, then sleeps)
INLINE_SPIN_SECONDS = 20e-6
_INLINE_SPIN_NS = int(INLINE_SPIN_SECONDS * 1e9)


class SmallAllReduce:
    """The fast path of ``all_reduce`` for one process group (see the module docstring)."""

    def __init__(self, group, check_op):
        self.group = group
        self._check_op = check_op        # _validate.reduce_op: raises ValueError if not allowed
        self.arena = group.arena
        self.rank = group.rank
        self.size = group.size
        self.peers = [q for q in range(group.size) if q != group.rank]
        self._waits = group.arena.tally.of("all_reduce")     # counted as ShmArena.wait does
        # (dtype, op) -> (kernel, dtype code, redop, its code, avg, C plan or None)
        self._kinds: dict = {}
        self._slot_bytes = -1             # the slot size the limit was computed for
        self._limit = 0                   # largest array the fast path takes (bytes)
        self.step = 0                     # the ShmOp step the op in progress has signalled
        self.native = True                # False: Python steps even if the C module is built

    # -- what the fast path takes ----------------------------------------------------------

    def _kind(self, dtype, op):
        """(kernel, dtype code, redop, its wire code, whether AVG, the C module's plan or
        None) for ``op`` on ``dtype``, or None if the general path must handle (and, if
        wrong, reject) it."""
        key = (dtype, op)
        kind = self._kinds.get(key)
        if kind is None:
            code = DTYPE_CODES.get(dtype)
            if code is None or not isinstance(op, ReduceOp):
                return None
            try:
                redop = self._check_op("all_reduce", op, dtype, self.group.global_rank)
            except ValueError:
                return None
            kind = self._kinds[key] = (kernel(redop, dtype), code, redop, int(redop),
                                       redop == ReduceOp.AVG, self._plan(code, int(redop)))
        return kind

    def _plan(self, dtype_code: int, redop_code: int):
        """The C module's plan for this dtype and reduction on the arena's current slots, or
        None (not built, RINGRT_NO_NATIVE=1, or a pair it does not compile)."""
        fastpath = _native.fastpath
        if fastpath is None or not self.native or self.arena.world_size != self.size \
                or self.size > fastpath.MAX_RANKS or not fastpath.supports(dtype_code, redop_code):
            return None
        return self.arena.native_plan(fastpath, dtype_code, redop_code)

    def _refresh(self) -> None:
        """The size limit for the arena's current slot (a group arena grows its slot)."""
        arena = self.arena
        self._slot_bytes = arena.slot_bytes
        self._kinds.clear()               # their C plans point into the old slots
        # what the general path stages as one small op (shm._reduce_through_slots, shm.fit)
        self._limit = min((arena.slot_bytes - (256 if arena.growable else 0)) // 2,
                          WHOLE_PIECE_TRAFFIC // self.size)

    # -- the op ------------------------------------------------------------------------------

    def run(self, array, op) -> bool:
        """All-reduce ``array`` in place and return True, or return False having done
        nothing (the caller then takes the general path)."""
        if type(array) is not np.ndarray:
            return False
        flags = array.flags
        if not (flags.c_contiguous and flags.writeable):
            return False
        if self.arena.slot_bytes != self._slot_bytes:
            self._refresh()
        kind = self._kind(array.dtype, op)
        if kind is None or not self._may_run(array.nbytes):
            return False
        try:
            self._all_reduce(array, array.size, kind, array.nbytes)
        finally:
            self.group.release_executor()
        return True

    def run_memory(self, address: int, count: int, dtype: np.dtype, op) -> bool:
        """All-reduce ``count`` elements of ``dtype`` at ``address`` (a torch tensor's memory,
        C-contiguous and writable: the caller checked) in place and return True, or return
        False having done nothing. Only through the C module, and not for AVG (whose
        division needs an array): False where either is missing."""
        if self.arena.slot_bytes != self._slot_bytes:
            self._refresh()
        kind = self._kind(dtype, op)
        if kind is None or kind[5] is None or kind[4]:
            return False
        nbytes = count * dtype.itemsize
        if not self._may_run(nbytes):
            return False
        try:
            self._all_reduce(address, count, kind, nbytes)
        finally:
            self.group.release_executor()
        return True

    def _may_run(self, nbytes: int) -> bool:
        """Whether an op of ``nbytes`` takes the fast path now; if so, the executor is
        claimed (the caller releases it)."""
        group = self.group
        return nbytes <= self._limit and group.observer.tracer is None \
            and not group.settings.debug and self.arena.wait_clock is None \
            and forced("all_reduce") is None and group.claim_executor()

    def _all_reduce(self, array, count: int, kind: tuple, nbytes: int) -> None:
        """The op on ``array`` (a NumPy array, or an address for the C module)."""
        group, arena = self.group, self.arena
        observer = group.observer
        reduce, dtype_code, redop, redop_code, average, plan = kind
        group.check_usable("all_reduce")
        seq = group.take_seq()
        # the flight recorder's record (observer.entered/started in one): the caller's frame
        # is the user's, or ringrt's own (DDP, the torch backend) that site_of walks past
        record = observer.recorder.enter(group.group_id, seq, "all_reduce", dtype_code, count,
                                         "shm", site_of(sys._getframe(2)))
        record[STATE] = RUNNING
        started = record[STARTED] = time.perf_counter()
        published = (group.group_id + 1, seq, _ALL_REDUCE, dtype_code, count, -1, redop_code, 1)
        arena.publish(published)
        failure = None
        self.step = 0                            # the ShmOp step this rank has signalled
        slow = None                              # the general path's check, made on demand
        try:
            if arena.last_half_op != seq - 1:    # ShmOp.acquire_half: the previous op was not
                slow = _SlowCheck(group, seq, published)       # a small one
                arena.wait(self.peers, arena.released, slow.check, release=True,
                           kind="all_reduce")
            if plan is not None:
                self._steps_in_c(plan, array, count, seq, slow, published)
            else:
                self._steps(array, reduce, count, seq, slow, published)
            self.step = 2
            arena.last_half_op = seq
            arena.released = encode_ticket(seq, 2)
            if average:
                finish(redop, array, self.size)
        except BaseException as error:
            failure = error
            if self.step < 2:                     # ShmOp.release_if_unfinished
                arena.released = encode_ticket(seq, self.step + 1)
                arena.signal_release(arena.released)
            raise
        finally:
            ended = time.perf_counter()
            group.ended("all_reduce", seq, nbytes, ended - started, failure is None)
            group.count_choice("all_reduce", "shm")
            if failure is None:
                record[ENDED] = ended
                record[STATE] = DONE
            else:
                observer.finished(record, failure)

    def _steps_in_c(self, plan, array, count: int, seq: int, slow, published: tuple) -> None:
        """The op's steps by the C module (``ringrt/_native/_fastpath.c``); Python waits or
        checks only when it hands back (``self.step``: the step signalled so far)."""
        arena = self.arena
        status = plan.run(array, count, seq, 0, 0 if arena.oversubscribed else _INLINE_SPIN_NS)
        if not status:
            spun = plan.last_spin_ns
            if spun:
                self._count_spin(spun * 1e-9)
                self._waits[MOVES] += plan.last_moved
            return
        self._waits[MOVES] += plan.last_moved
        self.step = 1                             # this rank signalled step 1
        if slow is None:
            slow = _SlowCheck(self.group, seq, published)
        if status == 1:                           # a peer not there yet
            arena.wait(self.peers, encode_ticket(seq, 1), slow.check, kind="all_reduce")
            status = plan.run(array, count, seq, 1, 0)
        if status == 2:
            self._check_peers(seq, seq & 1, slow, published)
            plan.run(array, count, seq, 2, 0)

    def _steps(self, array, reduce, count: int, seq: int, slow, published: tuple) -> None:
        """The op's steps in Python (the C module is not built, or does not take this dtype
        and reduction; ``self.step``: the step signalled so far)."""
        arena = self.arena
        parity = seq & 1
        flat = array.reshape(-1)
        views = arena.half_views(parity, flat.dtype)
        np.copyto(views[self.rank][:count], flat)
        arena.own.staged[parity] = seq
        target = encode_ticket(seq, 1)
        arena.signal(target)
        self.step = 1
        segments = arena.segments
        for peer in self.peers:
            ticket = segments[peer].ticket
            if (ticket.value - target) & _WORD >= _HALF_WORD:      # not reached yet
                if slow is None:
                    slow = _SlowCheck(self.group, seq, published)
                self._wait(ticket, target, slow)
        self._check_peers(seq, parity, slow, published)
        reduce(views[0][:count], views[1][:count], flat)       # rank order: same bits
        for q in range(2, self.size):
            reduce(flat, views[q][:count], flat)
        arena.signal_release(encode_ticket(seq, 2))

    def _check_peers(self, seq: int, parity: int, slow, published: tuple) -> None:
        """``ShmOp.phase``'s checks, once every peer's ticket reached step 1: each peer is in
        this op (or its staged record shows it took part), and published the same call
        (else the general path's check raises CollectiveMismatchError)."""
        arena = self.arena
        segments = arena.segments
        mine = arena.published_bytes
        packed = mine(self.rank)
        for peer in self.peers:
            segment = segments[peer]
            if segment.ticket.value >> STEP_BITS != seq & _SEQ_MASK and \
                    segment.staged[parity] != seq:
                if slow is None:
                    slow = _SlowCheck(self.group, seq, published)
                slow.insist_same_op(segment, parity)
            if mine(peer) != packed:
                theirs = arena.read(peer)
                if theirs is None or theirs[1] == seq:
                    if slow is None:
                        slow = _SlowCheck(self.group, seq, published)
                    slow.check([peer])        # raises CollectiveMismatchError

    def _count_spin(self, seconds: float) -> None:
        """Count a wait for peers that ended in the inline spin, as the arena counts a wait
        that ended spinning (``ringrt.stats()["shm"]``)."""
        waits = self._waits
        waits[WAITS] += 1
        waits[SPINS] += 1
        waits[SPIN_SECONDS] += seconds

    def _wait(self, ticket, target: int, slow) -> None:
        """Wait for a peer's ticket to reach ``target``: a short spin here (counted as the
        arena counts a wait that ended spinning), then the arena's wait, which checks for
        failures, spins longer and sleeps."""
        arena = self.arena
        if not arena.oversubscribed:             # else spinning takes a peer's core
            clock = time.perf_counter
            start = clock()
            give_up = start + INLINE_SPIN_SECONDS
            while (ticket.value - target) & _WORD >= _HALF_WORD:
                if clock() > give_up:
                    break
            else:
                self._count_spin(clock() - start)
                return
        arena.wait(self.peers, target, slow.check, kind="all_reduce")


class _SlowCheck:
    """What the general path's Exchange checks while a shared-memory op waits, built only
    when the fast path has to wait or meets something unusual."""

    def __init__(self, group, seq: int, published: tuple):
        _group, _seq, op, dtype_code, count, root, redop, _shm = published
        spec = OpSpec("all_reduce", op, dtype_code, count, root, redop, "shm")
        self.exchange = Exchange(group, seq, spec, Deadline(group.timeout))
        self.exchange.shm = None          # the fast path releases its own steps
        self.seq = seq

    def check(self, waiting_for=()) -> None:
        self.exchange.check_while_shm(waiting_for)

    def insist_same_op(self, segment, parity: int) -> None:
        """``ShmOp._insist_same_op``: wait until the peer's ticket is in this op or its
        staged record shows it, or the check names what went wrong."""
        seq = self.seq
        while segment.ticket.value >> STEP_BITS != seq & _SEQ_MASK and \
                segment.staged[parity] != seq:
            self.check()
            time.sleep(0.001)
