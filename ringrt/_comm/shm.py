"""Shared memory between the ranks of one host: a staging slot per rank, plus tickets.

When every rank of the world runs on one host, large and small collectives of the world group
skip the sockets: each rank owns a segment in ``/dev/shm`` (or, where there is none, a POSIX
``shm_open`` name: ``shm_files.py``) that every peer maps. A segment
holds a control block and one staging slot:

- ``ticket`` (uint32, a futex word): how far this rank has got: step 1, 2, ... of op ``seq``
  (the encoding: ``tickets.py``), so tickets only grow (mod 2**32), and an op that was
  abandoned midway cannot confuse the next one.
- ``release`` (uint32, a second futex word): the ticket of the last op whose reads this rank
  has finished. It is separate from ``ticket`` so that releasing never wakes peers that sleep
  waiting for our next phase (a spurious wake-up costs CPU, scarce with more ranks than cores).
- ``staged[seq % 2]``: the last op of each parity whose first phase this rank entered, so
  a peer seeing our ticket already in op N+1 can tell we took part in op N (see
  :meth:`ShmOp.acquire_half`) rather than skipped it.
- ``published``: (group, seq, op, dtype, count, root, redop, algorithm) of the op this rank
  is in — set at the start of *every* world op, socket ops too. A rank waiting for a peer
  compares it with its own, which is how mismatched calls are caught here without headers.
- ``doorbell`` (uint32, a futex word of point-to-point): a peer that wrote a message for this
  rank into a channel changes it and wakes this rank (``channel.py``, ``shm_p2p.py``).
- ``ticket_woken``, ``release_woken``, ``doorbell_woken`` (uint64 each, beside their word):
  the *wake record* of the word's last signal, the value announced and when its FUTEX_WAKE
  returned, stored after the wake. A waiter whose sleep timed out reads it to tell a lost
  wake from a late peer (``wakeups.py``).
- ``sleepers`` (a byte per rank of the arena): rank q sets byte q while it sleeps on one of
  this rank's ticket or release words. A signal makes the FUTEX_WAKE system call only if
  some byte is set: the waits of a small op usually end while spinning, and a wake nobody
  needs costs about as much as the rest of the signal. A waiter sets its byte *before* it
  reads the word it will sleep on, and a signaller stores the word before it reads the
  bytes, so one of the two sees the other (stores become visible in program order, x86's
  TSO, as for ``published``; on other machines every signal wakes, and so does every
  signal in an arena of more ranks than bytes). A waiter's first sleep is short anyway
  (``FIRST_SLEEP_SECONDS``), so even a wake skipped against this reasoning would cost
  that much, not a hang.

Between the control block and the slot lies the *point-to-point area* (``p2p_bytes``, sized
by ``channel.area_bytes``; none when point-to-point goes over sockets): the first ring of
each channel from this rank to a peer. The collectives never touch it.

Segments are unlinked as soon as every peer has mapped them, so nothing is left in
``/dev/shm`` even if a rank is killed. Space is reserved with ``posix_fallocate`` up front:
a full tmpfs makes the job fall back to sockets instead of crashing with SIGBUS later.

Only this user can open a segment: it is created 0600 (and checked), a peer's segment is
mapped only if this user owns it and nobody else may read it, and segments left by
our own ranks that died before unlinking them (``ringrt-PID-...``, PID gone) are removed.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import stat
import struct
import threading
import time

import numpy as np

from ringrt._comm import futex, shm_files, wakeups
from ringrt._settings import Settings
from ringrt._comm.tickets import MAX_STEPS, encode_ticket, in_op, next_op, reached

CONTROL_BYTES = 4096
_TICKET_AT, _STAGED_AT, _RELEASE_AT, _PUBLISHED_AT = 0, 16, 48, 64
_CPU_AT = 128                     # the CPU its last small all_reduce ran on, plus one (int32, 0:
                                  # unknown; written by _fastpath.c, its CPU_AT), on its own line
_DOORBELL_AT = 192                # its own cache line: point-to-point never disturbs tickets
# each futex word's wake record (wakeups.py), 8-aligned (stored in one piece) on its word's line
_TICKET_WOKEN_AT, _RELEASE_WOKEN_AT, _DOORBELL_WOKEN_AT = 8, 56, 200
SLOT_RECORD_AT = 256              # a group arena's grown slot: size, status, name (group_shm)
SLEEPERS_AT, SLEEPER_BYTES = 384, 128     # a byte per waiting rank (see the module docstring)
COUNTS_AT = 512                   # an uneven all_to_all's element counts, one int64 a peer
MAX_COUNTS = (CONTROL_BYTES - COUNTS_AT) // 8
PUBLISHED_FIELDS = 8
DEFAULT_SLOT_BYTES = Settings().shm_slot_bytes      # RINGRT_SHM_SLOT_BYTES unset
SPIN_SECONDS = Settings().shm_spin_us * 1e-6   # spin before sleeping on the futex (default)
# ... and, while every rank has a core of its own, up to this long when peers keep arriving
# just after we went to sleep (see ShmArena.spin_seconds)
MAX_SPIN_SECONDS = Settings().shm_max_spin_us * 1e-6
SLICE_SECONDS = 0.02            # sleep at most this long between failure checks
FIRST_SLEEP_SECONDS = 0.002     # a wait's first sleep, while skipping unneeded wakes
# whether stores become visible in program order (see the module docstring's ``sleepers``)
_STORES_IN_ORDER = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_MAIN_THREAD = threading.main_thread().ident


def half_slot(slot_bytes: int) -> int:
    """Half a slot of ``slot_bytes``, in whole cache lines: a small op's half (ops alternate
    halves) or one of a large op's two regions (``_algorithms/shm.py``)."""
    return slot_bytes // 2 // 64 * 64


_PUBLISHED = struct.Struct(f"<{PUBLISHED_FIELDS}q")
_INT64 = struct.Struct("<q")


def map_private(path: str, size: int, create: bool) -> mmap.mmap:
    """Map the shared-memory file ``path`` (``size`` bytes), creating it if ``create``.

    Created 0600 with O_EXCL and room reserved (``posix_fallocate``: a full tmpfs fails here
    with OSError, not with SIGBUS later); opened only if this user owns it and nobody else
    may read or write it, never through a symlink.

    Raises:
        PermissionError: the file is not private to this user.
        OSError: it cannot be created, opened or mapped (no room, gone, ...).
    """
    fd = shm_files.open_fd(path, create)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise PermissionError(f"shared-memory segment {path} is not private to this "
                                  f"user (owner {info.st_uid}, mode {info.st_mode & 0o777:o})")
        if create:
            try:
                shm_files.reserve(fd, size)
            except OSError:
                shm_files.unlink(path)
                raise
        elif info.st_size < size:        # macOS rounds a shm_open object up to whole pages
            raise OSError(f"shared-memory segment {path} has {info.st_size} bytes, expected "
                          f"{size}")
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


class _Segment:
    """One rank's mapped segment: its ticket word, staged records, published op, doorbell,
    point-to-point area and slot.

    The control words are accessed through ctypes views (``ticket.value``): they are read
    and written on every op, and ctypes is several times cheaper per access than NumPy.
    """

    def __init__(self, path: str, size: int, create: bool, p2p_bytes: int = 0):
        self.map = map_private(path, size, create)
        self.ticket = ctypes.c_uint32.from_buffer(self.map, _TICKET_AT)
        self.release = ctypes.c_uint32.from_buffer(self.map, _RELEASE_AT)
        self.release_address = ctypes.addressof(self.release)
        self.staged = (ctypes.c_int64 * 2).from_buffer(self.map, _STAGED_AT)   # by parity
        self.ticket_address = ctypes.addressof(self.ticket)
        self.doorbell = ctypes.c_uint32.from_buffer(self.map, _DOORBELL_AT)
        self.doorbell_address = ctypes.addressof(self.doorbell)
        self.ticket_woken = ctypes.c_uint64.from_buffer(self.map, _TICKET_WOKEN_AT)
        self.release_woken = ctypes.c_uint64.from_buffer(self.map, _RELEASE_WOKEN_AT)
        self.doorbell_woken = ctypes.c_uint64.from_buffer(self.map, _DOORBELL_WOKEN_AT)
        self.published_seq = ctypes.c_int64.from_buffer(self.map, _PUBLISHED_AT + 8)
        self.p2p_bytes = p2p_bytes
        slot_at = CONTROL_BYTES + p2p_bytes
        self.slot = np.frombuffer(self.map, np.uint8, size - slot_at, slot_at)
        if create:
            self.staged[0] = self.staged[1] = -1

    def close(self) -> None:
        self.ticket = self.release = self.staged = self.slot = self.doorbell = None
        self.ticket_woken = self.release_woken = self.doorbell_woken = None
        self.published_seq = None
        try:
            self.map.close()
        except BufferError:      # a caller still holds a view; the mapping dies with it
            pass


class ShmArena:
    """This rank's segment and its peers', once every peer has attached: the shared memory
    of some ranks on one host. The process group has up to two: the *world arena* (every
    rank, when all run on one host) and, in a job across hosts, the *host arena* (this
    host's ranks, ``host_shm``); a subgroup's are ``group_shm.GroupArena``."""

    growable = False            # the slot is sized up front (group_shm.GroupArena grows)

    def __init__(self, rank: int, world_size: int, p2p_bytes: int = 0,
                 slot_bytes: int | None = None, settings: Settings | None = None):
        settings = Settings.read() if settings is None else settings
        self.settings = settings
        self.rank = rank
        self.world_size = world_size
        self.slot_bytes = slot_bytes if slot_bytes is not None else \
            max(64 << 10, settings.shm_slot_bytes)
        self.p2p_bytes = p2p_bytes
        self.path = shm_files.new_path(f"-{rank}")
        self.own = _Segment(self.path, CONTROL_BYTES + p2p_bytes + self.slot_bytes, create=True,
                            p2p_bytes=p2p_bytes)
        self.segments: dict[int, _Segment] = {rank: self.own}
        self.released = 0                      # the last ticket this rank released
        self.last_half_op = -2                 # seq of the last completed half-slot op
        self.oversubscribed = world_size > (os.cpu_count() or 1)
        # signals wake only when a peer sleeps: possible where stores are seen in order and
        # every rank has its byte (see the module docstring)
        self.skip_idle_wakes = _STORES_IN_ORDER and world_size <= SLEEPER_BYTES
        self._no_sleepers = bytes(world_size)
        self._sleepers_end = SLEEPERS_AT + world_size
        # how waits went, per op kind (ringrt.stats()["shm"]; see wakeups.py): a wait counts
        # under the kind of the op that waits (only a wait that finds a peer missing looks its
        # entry up), point-to-point waits under "p2p"
        self.tally = wakeups.WaitTally()
        self.base_spin_seconds = settings.shm_spin_us * 1e-6    # RINGRT_SHM_SPIN_US
        self.max_spin_seconds = settings.shm_max_spin_us * 1e-6
        self.spin_seconds = self.base_spin_seconds
        self.wait_clock = None                 # see time_waits_with
        self.half_views_made: dict = {}        # see half_views
        self._published_group, self._published_call = None, None    # see publish

    @classmethod
    def create(cls, rank: int, world_size: int, p2p_bytes: int = 0,
               settings: Settings | None = None):
        """This rank's arena (with a point-to-point area of ``p2p_bytes``), or None when
        shared memory is off (sockets only). Whether every rank is on one host is only known
        after rendezvous: see ``_process_group``."""
        settings = Settings.read() if settings is None else settings
        if world_size < 2 or settings.no_shm:
            return None
        if settings.transport == "tcp":
            return None
        shm_files.sweep_stale()
        try:
            return cls(rank, world_size, p2p_bytes=p2p_bytes, settings=settings)
        except OSError:
            return None            # no shared memory here, or no room in it

    @property
    def card(self) -> dict:
        return {"path": self.path, "slot_bytes": self.slot_bytes, "p2p_bytes": self.p2p_bytes}

    @property
    def slot_limit(self) -> int:
        """The largest slot an op may count on (what the algorithm choice sees)."""
        return self.slot_bytes

    def write_counts(self, counts) -> None:
        """Publish this rank's per-peer element counts (an uneven all_to_all's sends)."""
        np.frombuffer(self.own.map, np.int64, len(counts), COUNTS_AT)[...] = counts

    def counts(self, peer: int, n: int) -> np.ndarray:
        """A peer's published counts (a copy)."""
        return np.frombuffer(self.segments[peer].map, np.int64, n, COUNTS_AT).copy()

    def attach(self, cards: dict[int, dict]) -> None:
        """Map every peer's segment (call after rendezvous, before :meth:`unlink`)."""
        for peer, card in cards.items():
            if peer != self.rank:
                size = CONTROL_BYTES + card["p2p_bytes"] + card["slot_bytes"]
                self.segments[peer] = _Segment(card["path"], size, create=False,
                                               p2p_bytes=card["p2p_bytes"])
        self.slot_bytes = min(card["slot_bytes"] for card in cards.values())

    def unlink(self) -> None:
        """Remove our segment's name; the mappings stay valid until closed."""
        shm_files.unlink(self.path)

    def half_views(self, parity: int, dtype) -> list[np.ndarray]:
        """Every rank's half slot ``parity`` (a small op's, see ``ShmOp.half``) as elements
        of ``dtype``, by rank; kept until the slots change (no view may outlive its slot)."""
        key = (parity, dtype)
        views = self.half_views_made.get(key)
        if views is None:
            half = half_slot(self.slot_bytes)
            usable = half // dtype.itemsize * dtype.itemsize
            views = self.half_views_made[key] = [
                self.segments[q].slot[parity * half:parity * half + usable].view(dtype)
                for q in range(self.world_size)]
        return views

    def native_plan(self, fastpath, dtype_code: int, redop_code: int):
        """A ``fastpath.Plan`` (``ringrt/_native/_fastpath.c``) for a small all_reduce of
        ``dtype_code`` with ``redop_code`` on this arena: the addresses of every rank's
        ticket, staged records, published block and both half slots, and of this rank's
        release word, wake records and sleepers bytes. The plan holds NumPy views of the
        control blocks and half slots, so the mappings outlive it even if the arena closes;
        make a new one when the slots change (a group arena's grow)."""
        u8 = np.dtype(np.uint8)
        halves = [self.half_views(parity, u8) for parity in (0, 1)]
        ranks = range(self.world_size)
        base = [self.segments[q].ticket_address - _TICKET_AT for q in ranks]
        controls = [np.frombuffer(self.segments[q].map, np.uint8, CONTROL_BYTES) for q in ranks]
        own = self.own
        return fastpath.Plan(
            self.rank, self.world_size, dtype_code, redop_code, self.skip_idle_wakes,
            len(halves[0][self.rank]),
            tuple(b + _TICKET_AT for b in base), tuple(b + _STAGED_AT for b in base),
            tuple(b + _PUBLISHED_AT for b in base),
            tuple(v.__array_interface__["data"][0] for v in halves[0]),
            tuple(v.__array_interface__["data"][0] for v in halves[1]),
            own.release_address, ctypes.addressof(own.ticket_woken),
            ctypes.addressof(own.release_woken), base[self.rank] + SLEEPERS_AT,
            (controls, halves))

    def close(self) -> None:
        self.half_views_made.clear()
        self.unlink()
        for segment in self.segments.values():
            segment.close()
        self.segments.clear()

    # -- tickets ------------------------------------------------------------------------

    def publish(self, fields: tuple) -> None:
        """Announce the op this rank is in (see the module docstring).

        A seqlock in effect: the seq field is invalidated first and written last, and
        :meth:`read` accepts a block only if it saw the same valid seq before and after, so
        a reader racing with a rewrite gets "unknown", never a mix of two ops. This relies on
        stores becoming visible in program order, as on x86 (TSO). When only the seq differs
        from the block already there (an op called like the one before, as in a loop), the
        seq alone is stored: one 8-byte store, which a reader sees whole or not at all.
        """
        if fields[0] == self._published_group and fields[2:] == self._published_call:
            self.own.published_seq.value = fields[1]
            return
        mapped = self.own.map
        _INT64.pack_into(mapped, _PUBLISHED_AT + 8, -1)
        _PUBLISHED.pack_into(mapped, _PUBLISHED_AT, fields[0], -1, *fields[2:])
        _INT64.pack_into(mapped, _PUBLISHED_AT + 8, fields[1])
        self._published_group, self._published_call = fields[0], fields[2:]

    def published_bytes(self, peer: int) -> bytes:
        """A peer's raw published block (compared as bytes on the hot path)."""
        return self.segments[peer].map[_PUBLISHED_AT:_PUBLISHED_AT + _PUBLISHED.size]

    def read(self, peer: int) -> tuple | None:
        """A peer's published op, or None while it is being rewritten."""
        mapped = self.segments[peer].map
        before = _INT64.unpack_from(mapped, _PUBLISHED_AT + 8)[0]
        fields = _PUBLISHED.unpack_from(mapped, _PUBLISHED_AT)
        if before == -1 or fields[1] != before or \
                _INT64.unpack_from(mapped, _PUBLISHED_AT + 8)[0] != before:
            return None
        return fields

    def disagreeing(self, peers, fields: tuple) -> list[tuple[int, tuple]]:
        """Peers in the same op (same group and seq) that called it differently."""
        found = []
        for peer in peers:
            theirs = self.read(peer)
            if theirs is not None and theirs[:2] == fields[:2] and theirs != tuple(fields):
                found.append((peer, theirs))
        return found

    def signal(self, value: int) -> None:
        """Set our ticket to ``value``, wake whoever sleeps on it, then record the wake."""
        own = self.own
        own.ticket.value = value
        if self.skip_idle_wakes and \
                own.map[SLEEPERS_AT:self._sleepers_end] == self._no_sleepers:
            return                                  # nobody sleeps on our words
        futex.wake(own.ticket_address)
        # wakeups.stamp(value), inlined: one clock read and one store, no call
        own.ticket_woken.value = time.perf_counter_ns() >> 10 << 32 | value

    def signal_release(self, value: int) -> None:
        """Set our release word to ``value``, wake whoever sleeps waiting to reuse their
        slot, then record the wake."""
        own = self.own
        own.release.value = value
        if self.skip_idle_wakes and \
                own.map[SLEEPERS_AT:self._sleepers_end] == self._no_sleepers:
            return
        futex.wake(own.release_address)
        own.release_woken.value = time.perf_counter_ns() >> 10 << 32 | value   # wakeups.stamp

    def time_waits_with(self, clock) -> None:
        """Add the time :meth:`wait` takes to ``clock`` (``ringrt._observe.waits.WaitClock``,
        while tracing), or stop timing (None)."""
        self.wait_clock = clock

    def wait(self, peers, target: int, check, release: bool = False,
             kind: str = "other") -> None:
        """Return once every peer's ticket reached ``target``; ``check()`` runs between
        sleeps and raises to give up (lost peer, deadline, mismatch, abort). The wait counts
        under op kind ``kind`` in ``tally``.

        With ``release=True``, wait for the peers to have finished reading our slot up to the
        op of ``target``: their release word reached it, or their ticket is already in a later
        op (a peer that skipped an op, which only a failed or mismatched call does, never
        releases it; one that moved on has read it all). Only the release word is signalled
        for this, so a wait for a skipped op sleeps short slices (counted as ``overslept``).
        """
        # timed inline, not through WaitClock.timed: no extra call on this hot path
        started = None if self.wait_clock is None else time.perf_counter()
        try:
            segments = self.segments
            if release:
                later_op = next_op(target)

                def done(segment):
                    return reached(segment.release.value, target) or \
                        reached(segment.ticket.value, later_op)
                word, slice_s = "release", SLICE_SECONDS / 10
            else:
                def done(segment):
                    return reached(segment.ticket.value, target)
                word, slice_s = "ticket", SLICE_SECONDS
            pending = [p for p in peers if not done(segments[p])]
            if pending:
                self._await(pending, done, word, slice_s, check, kind)
        finally:
            if started is not None:
                self.wait_clock.total += time.perf_counter() - started

    def _await(self, pending: list, done, word: str, slice_s: float, check,
               kind: str) -> None:
        """Spin, then sleep on the futex word ``word`` ("ticket" or "release") of the first
        pending peer until all are done (see :meth:`wait`), counting how it went."""
        address, woken = word + "_address", word + "_woken"
        entry = self.tally.of(kind)
        entry[wakeups.WAITS] += 1
        clock = time.perf_counter
        start = clock()
        # only the main thread spins longer: a background op (async, DDP overlap) spinning
        # would take the GIL and the core from the compute it overlaps
        spin_until = start + (self.spin_seconds if threading.get_ident() == _MAIN_THREAD
                              else self.base_spin_seconds)
        polite_from = start + self.base_spin_seconds   # beyond the base spin, let others run
        next_check = start + slice_s
        yielding = self.oversubscribed
        spinning = True
        segments = self.segments
        # our byte in a peer's sleepers (none where every signal wakes)
        flag = SLEEPERS_AT + self.rank if self.skip_idle_wakes else None
        first_sleep = self.skip_idle_wakes
        while pending:
            segment = segments[pending[0]]
            # read the word before testing it: a signal landing between the test and the
            # futex call then makes the call return at once (EAGAIN) instead of sleeping
            watched = getattr(segment, word)
            seen = watched.value
            if done(segment):
                pending.pop(0)
                continue
            if spinning:
                now = clock()
                if now < spin_until:
                    if yielding or now > polite_from:
                        os.sched_yield()
                    continue
                spinning = False
                wakeups.spun(entry, now - start, satisfied=False)
            if flag is not None:
                segment.map[flag] = 1            # then read the word again (module docstring)
                seen = watched.value
                if done(segment):
                    segment.map[flag] = 0
                    pending.pop(0)
                    continue
            outcome = wakeups.sleep(entry, watched, getattr(segment, woken),
                                    getattr(segment, address), seen,
                                    min(slice_s, FIRST_SLEEP_SECONDS) if first_sleep
                                    else slice_s,
                                    lambda segment=segment: done(segment))
            if flag is not None:
                segment.map[flag] = 0
            first_sleep = False
            # check after a slice ran out, or a slice's worth of wake-ups that did not end
            # the wait (not after each: it reads every peer's published op and polls the inbox)
            if not done(segment) and (outcome == futex.TIMED_OUT or clock() >= next_check):
                next_check = clock() + slice_s
                check(pending)
        if spinning:
            wakeups.spun(entry, clock() - start, satisfied=True)
        elif not self.oversubscribed:
            self._adapt_spin(clock() - start)

    def _adapt_spin(self, waited: float) -> None:
        """After a wait that slept, with a core per rank: spin longer next time if the peers
        came soon after we went to sleep.

        Waking a sleeping process is slow on a VM (its idle vCPU must be woken), so
        a peer that arrives just after we gave up spinning makes us late by that much, which
        makes *our* peers give up and sleep at the next step: ranks fall into a mode where
        every op sleeps, and a small all_reduce takes many times as long. Spinning up to twice
        the wait that just slept (yielding the core beyond the base spin),
        at most MAX_SPIN_SECONDS, breaks that; long waits (a slow peer) leave it as it is.
        With more ranks than cores spinning takes the core a peer needs: never adapted.
        Only waits on the main thread use the grown spin (see :meth:`_await`): on DDP's
        communication thread it slowed the overlapped step, while the synchronous step
        gained. The stalls benchmark counts the sleeps and the train_step benchmark times the
        step (world 2 on 2 cores); figures in docs/performance-notes.md."""
        if waited < self.max_spin_seconds:
            self.spin_seconds = min(self.max_spin_seconds, max(self.spin_seconds, 2 * waited))


class ShmOp:
    """One op's use of the arena, in steps every rank takes in the same order.

    - ``acquire()``: wait until every peer released the previous use of our slot;
    - ``phase()``: signal the next step and wait for every peer to signal it too;
    - ``release()``: signal that we are done reading the peers' slots.
    """

    def __init__(self, arena: ShmArena, rank: int, size: int, seq: int, published: tuple,
                 check, kind: str = "other"):
        self.arena, self.rank, self.size, self.seq, self.check = arena, rank, size, seq, check
        self.kind = kind                        # the op kind its waits count under
        self.peers = [q for q in range(size) if q != rank]
        self.step = 0
        self.done = False                       # released (the op's last step)
        self._published = _PUBLISHED.pack(*published)

    def acquire(self) -> None:
        self.arena.wait(self.peers, self.arena.released, self.check, release=True,
                        kind=self.kind)

    def fit(self, slot_bytes: int) -> None:
        """Make every rank's slot hold ``slot_bytes`` (every rank calls it with the same
        value at the same step): a group arena grows its slots here (three phases), the world
        arena's are sized up front."""
        if slot_bytes > self.arena.slot_bytes and self.arena.growable:
            self.arena.grow(self, slot_bytes)

    def half(self) -> int:
        """Byte offset of the half slot a small op uses: ops alternate halves by seq."""
        return (self.seq & 1) * half_slot(self.arena.slot_bytes)

    def acquire_half(self) -> None:
        """Before a small op writes its half: if the previous op was a small op whose phase
        completed, every peer had finished reading *this* half before it entered that op,
        so there is nothing to wait for; otherwise wait as :meth:`acquire` does."""
        if self.arena.last_half_op != self.seq - 1:
            self.acquire()

    def half_done(self) -> None:
        """A small op's phase completed (see :meth:`acquire_half`)."""
        self.arena.last_half_op = self.seq

    def again(self) -> None:
        """Take another step after :meth:`release` (a two-level op's local steps share one
        op): a later step may use the whole slot after a half-slot step, so the next op must
        not skip its acquire (see :meth:`acquire_half`)."""
        self.arena.last_half_op = -2
        self.done = False

    def phase(self) -> None:
        self.step += 1
        target = encode_ticket(self.seq, self.step)
        if self.step == 1:
            self.arena.own.staged[self.seq & 1] = self.seq
        self.arena.signal(target)
        self.arena.wait(self.peers, target, self.check, kind=self.kind)
        for peer in self.peers:
            self._insist_same_op(peer)
            if self.step == 1 and self.arena.published_bytes(peer) != self._published:
                theirs = self.arena.read(peer)           # differs: this op, or already the next?
                if theirs is None or theirs[1] == self.seq:
                    self.check([peer])    # raises CollectiveMismatchError naming the peer

    def _insist_same_op(self, peer: int) -> None:
        """A peer's ticket from a later op means it finished this op and went on to a small
        op (allowed: see :meth:`acquire_half`; its ``staged`` record shows this op). Any
        other later ticket would mean it never took part in this op, which a correct run
        cannot produce (a rejected call takes no sequence number): wait until ``check``
        names what went wrong (a mismatch, a lost peer or the deadline)."""
        segment = self.arena.segments[peer]
        parity, seq = self.seq & 1, self.seq
        while not in_op(segment.ticket.value, seq) and segment.staged[parity] != seq:
            self.check([peer])
            time.sleep(0.001)

    def release(self) -> None:
        self.step += 1
        self.arena.released = encode_ticket(self.seq, self.step)
        self.arena.signal_release(self.arena.released)
        self.done = True

    def release_if_unfinished(self) -> None:
        """After an op that failed midway: we no longer touch any slot, so say so, or a
        peer that finished the op would wait in its next ``acquire`` for us forever."""
        if not self.done and self.step < MAX_STEPS:
            self.release()

    def slot(self, rank: int, dtype, count: int, offset: int = 0, byte_offset: int = 0
             ) -> np.ndarray:
        """Rank ``rank``'s slot viewed as ``count`` elements of ``dtype`` from element
        ``offset`` (plus ``byte_offset``)."""
        itemsize = np.dtype(dtype).itemsize
        start = byte_offset + offset * itemsize
        return self.arena.segments[rank].slot[start:start + count * itemsize].view(dtype)

