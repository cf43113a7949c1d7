"""Point-to-point between ranks of one host, over shared-memory channels (``channel.py``).

Why not the sockets: a ZeroMQ message between two processes crosses two I/O threads and the
kernel, which left point-to-point through the torch backend slower than gloo's at every size;
a futex-signalled ring in shared memory moves a small message with no thread in between and a
large one with one copy in and one copy out. The torch collectives benchmark's send_recv
(make bench-torch) and the p2p benchmark check it; figures in docs/performance-notes.md.

**Sending** copies the message into the channel to the peer (growing it if needed, never
waiting for the reader: ``channel.py``), then changes the peer's *doorbell* (a futex word in
its arena segment) and wakes it. So ``send`` and ``isend`` both return as soon as the copy is
made: the copy is ``isend``'s snapshot. With more ranks than cores the sender then yields its
core, handing it to the receiver it woke (see :meth:`ShmPointToPoint.send`).

**Receiving** is matched as MPI does it. A receive is *posted* (``src`` or any member, a tag,
a group); messages are read from the channels of the senders a posted receive could match,
in channel order, and each goes to the earliest-posted receive it matches, straight from the
ring into the receiver's array (one copy). A message met on the way that no receive is posted
for is copied to the *stash*, and a new receive takes from the stash first. Hence messages
from one sender with one tag are received in the order sent, and an any-source receive takes
a stashed message (earliest arrived first) before reading further. A receive whose message
is already at the front of its channel, with nothing else posted, completes without being
posted at all (the common case of a ``recv`` that comes after the ``send``).

**Progress without a thread.** Receives are not ops of the executor (point-to-point is
outside the collectives' order): a receive completes when some thread *drives* this engine -
the thread that waits for it (``Work.wait``, ``recv``), one that asks ``is_completed``, or a
later receive. Only a receive someone added a callback to (a torch future) needs progress
while nobody waits: the first such receive starts a background thread that drives while any
receive is posted. A waiting thread spins ``RINGRT_P2P_SPIN_US`` on the doorbell, then sleeps
on it in ``SLICE_SECONDS`` slices, checking for lost peers and its deadline between drives - after
reading the channels, so a message sent before its sender was lost is still delivered.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque

import numpy as np

from ringrt._comm import futex, wakeups, wire
from ringrt._comm.channel import Reader, Ring, Writer
from ringrt._comm.shm import SLICE_SECONDS
from ringrt._comm.work import Work
from ringrt.errors import CollectiveMismatchError, DistError, NotInitializedError, PeerLostError

# RINGRT_P2P_SPIN_US (read per arena: ShmPointToPoint._spin_seconds): spin this long on
# the doorbell before sleeping on it. Waking a sleeping process on a VM
# costs more than a message takes to come back (an idle vCPU must be woken). The default, as
# for the collectives' tickets (shm.py), is the knee of a small ring exchange through torch:
# longer spins gained nothing at world 2 and lost at world 4 on 2 cores, where spinning takes
# the core the sender needs (make bench-torch; figures in docs/performance-notes.md).
# ... plus the time the sender needs to copy a message of the receiving array's size (at
# SPIN_BYTES_PER_SECOND, at most SPIN_EXTRA_SECONDS more) when every rank has a core of its
# own: else a large exchange at world 2 could fall into a mode where each rank slept through
# the other's copy and paid the wake-up on every call (the p2p benchmark's exchange pattern).
# With more ranks than cores the spin stays short: it would take the core the sender needs.
SPIN_BYTES_PER_SECOND, SPIN_EXTRA_SECONDS = 2e9, 1e-3
_DTYPE_CODES = wire.DTYPE_CODES


def mismatch(src: int, dtype: int, count: int, array: np.ndarray, tag: int, rank: int):
    """The CollectiveMismatchError for a message of another dtype (wire code) or element
    count than the receiving ``array`` (naming both), or None when they agree."""
    if dtype == _DTYPE_CODES[array.dtype] and count == array.size:
        return None
    sent = wire.dtype_name(wire.CODE_DTYPES.get(dtype))
    problem = (f"rank {src} sent {sent}[{count}] with tag {tag} but rank {rank} receives into "
               f"{wire.dtype_name(array.dtype)}[{array.size}]")
    return CollectiveMismatchError("recv", tag, [src], rank, problem)


class Receive(Work):
    """A posted receive: the Work ``irecv`` returns (its result is the sender's rank).

    ``peers`` are the ranks it may take a message from (``src`` alone, or the group's other
    members for an any-source receive); ``check()`` raises when it cannot complete (a lost
    peer, the deadline).
    """

    def __init__(self, engine, name: str, array: np.ndarray, src, tag: int, group_id: int,
                 peers: frozenset, check):
        super().__init__(f"{name} from {'any rank' if src is None else src} (tag {tag})",
                         progress=engine)
        self.array, self.src, self.tag, self.group_id = array, src, tag, group_id
        self.peers, self.check = peers, check
        self.started = time.perf_counter()
        self.background = False


class ShmPointToPoint:
    """This rank's channels to and from every other rank of the host, and its receives.

    Args:
        arena: the world arena (:class:`~ringrt._comm.shm.ShmArena`), every rank's segment laid
            out with a point-to-point area (``channel.area_bytes``).
        lost: the sentinel's ``lost`` dict (peer -> why), read when closing.
        counters: this rank's :class:`~ringrt._comm.counters.OpCounters`.
    """

    def __init__(self, arena, lost: dict, counters):
        self.rank, self.world_size = rank, world = arena.rank, arena.world_size
        self._spin_seconds = arena.settings.p2p_spin_us * 1e-6       # RINGRT_P2P_SPIN_US
        self._arena = arena
        self._lost = lost
        self._counters = counters
        peers = [q for q in range(world) if q != rank]
        self._writers = {q: Writer(Ring.first(arena.own, world, rank, q), rank, q)
                         for q in peers}
        self._readers = {q: Reader(Ring.first(arena.segments[q], world, q, rank))
                         for q in peers}
        self._doorbell = arena.own.doorbell
        self._doorbell_address = arena.own.doorbell_address
        self._doorbell_woken = arena.own.doorbell_woken
        self._bells = {q: (arena.segments[q].doorbell, arena.segments[q].doorbell_address,
                           arena.segments[q].doorbell_woken) for q in peers}
        self._stamp = 0                                  # see _ring
        self._oversubscribed = arena.oversubscribed
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()                    # readers, posted, stash
        self._posted: list[Receive] = []
        self._stash: dict[tuple, deque] = {}    # (group_id, tag, src) -> [(arrival, record, data)]
        self._arrival = itertools.count()
        self._background: threading.Thread | None = None
        self._background_wanted = threading.Condition(threading.Lock())
        self._closed = False
        self.counts = {"stashed": 0, "posted": 0}
        # how waits on the doorbell went (ringrt.stats()["shm"]["by_op"]["p2p"], wakeups.py);
        # the background thread's own entry: counters are not shared between threads
        self._waits = arena.tally.of("p2p")
        self._background_waits = arena.tally.of("p2p_background")

    # -- sending --------------------------------------------------------------------------

    def send(self, dst: int, group_id: int, tag: int, array: np.ndarray, watch=None) -> None:
        """Copy ``array`` into the channel to ``dst`` and ring its doorbell (``send`` and
        ``isend`` alike: the copy is the snapshot, and nothing is waited for, so ``watch``,
        which :class:`~ringrt._comm.socket_p2p.SocketPointToPoint` uses, goes unused).

        With more ranks than cores, the sender then yields its core: the receiver it just
        woke may be waiting for that very core. Passing the baton keeps the ranks of a ring
        exchange in step instead of letting some run ahead while others stall, which cut the
        slowest rank's time per call of a small ring exchange with 4 ranks on 2 cores (the p2p
        benchmark's exchange pattern; figures in docs/performance-notes.md).
        """
        self._counters.record("send", array.nbytes, 0.0)
        payload = array.reshape(-1).view(np.uint8)
        with self._send_lock:
            if self._closed:
                raise NotInitializedError("send: the process group was destroyed")
            self._writers[dst].append(_DTYPE_CODES[array.dtype], group_id, self.rank, tag,
                                      array.size, payload)
            self._ring(dst)
        if self._oversubscribed:
            os.sched_yield()

    def _ring(self, dst: int) -> None:
        """Give ``dst``'s doorbell a value nobody wrote before, then wake it.

        Values are ``count * world_size + rank``: distinct across senders and over time, so
        a reader that read the doorbell, found nothing, and sleeps on that value is woken by
        any later message, whoever sends it and however the writes race. The wake is then
        recorded (``wakeups.stamp``, inlined): the last sender's record wins, which is enough,
        as a record counts only for the value the doorbell holds.
        """
        self._stamp += 1
        word, address, woken = self._bells[dst]
        value = (self._stamp * self.world_size + self.rank) & 0xFFFFFFFF
        word.value = value
        futex.wake(address)
        woken.value = time.perf_counter_ns() >> 10 << 32 | value

    # -- receiving ------------------------------------------------------------------------

    def recv(self, name: str, array: np.ndarray, src, tag: int, group_id: int, peers,
             watch) -> int:
        """Receive into ``array`` from ``src`` (None: any of ``peers``, the group's other
        members in order); returns the sender. ``watch()`` starts the check (see
        :meth:`post`) if the message is not here yet."""
        sender = self.receive_ready(array, src, tag, group_id, peers)
        if sender is not None:
            return sender
        return self.post(name, array, src, tag, group_id, peers, watch()).result()

    def irecv(self, name: str, array: np.ndarray, src, tag: int, group_id: int, peers,
              watch) -> Work:
        """Start :meth:`recv`; the Work's result is the sender."""
        sender = self.receive_ready(array, src, tag, group_id, peers)
        if sender is not None:
            return Work.finished(f"{name} from {sender} (tag {tag})", sender)
        return self.post(name, array, src, tag, group_id, peers, watch())

    def receive_ready(self, array: np.ndarray, src, tag: int, group_id: int,
                      peers) -> int | None:
        """Receive into ``array`` at once if the message is already here and nothing is
        posted (so no earlier receive can claim it); returns the sender, or None."""
        with self._lock:
            if self._posted or self._closed:
                return None
            if self._stash:
                entry = self._take_stashed(src, tag, group_id, peers)
                if entry is not None:
                    return self._deliver_stashed(entry, array, tag, self._now)
            for peer in (peers if src is None else (src,)):
                reader = self._readers[peer]
                if not reader.ready():
                    continue
                try:
                    record = reader.front()
                except OSError:
                    return None                  # posting it reports the lost message
                if record is not None and record.group == group_id and record.tag == tag:
                    return self._deliver(reader, record, array, tag, self._now)
        return None

    @staticmethod
    def _now(error, sender=None) -> int:
        """How a receive completed on the calling thread ends: the sender, or raise."""
        if error is not None:
            raise error
        return sender

    def post(self, name: str, array: np.ndarray, src, tag: int, group_id: int, peers,
             check) -> Receive:
        """Post a receive into ``array`` (it may complete at once); returns its Work."""
        receive = Receive(self, name, array, src, tag, group_id,
                          frozenset(peers) if src is None else frozenset((src,)), check)
        with self._lock:
            if self._closed:
                raise NotInitializedError(f"{name}: the process group was destroyed")
            self.counts["posted"] += 1
            entry = self._take_stashed(src, tag, group_id, receive.peers) if self._stash \
                else None
            if entry is None:
                self._posted.append(receive)
                done = self._drive()
            else:
                done = [self._deliver_stashed(entry, array, tag, _completion(receive))]
        _finish(done)
        return receive

    def _take_stashed(self, src, tag: int, group_id: int, peers):
        if src is not None:
            key = (group_id, tag, src)
            queued = self._stash.get(key)
        else:
            keys = [k for k in self._stash if k[0] == group_id and k[1] == tag and k[2] in peers]
            key = min(keys, key=lambda k: self._stash[k][0][0], default=None)
            queued = self._stash.get(key)
        if not queued:
            return None
        entry = queued.popleft()
        if not queued:
            del self._stash[key]
        return entry

    def _deliver_stashed(self, entry, array: np.ndarray, tag: int, complete):
        _arrival, record, payload = entry
        error = mismatch(record.src, record.dtype, record.count, array, tag, self.rank)
        if error is not None:
            return complete(error)
        array.reshape(-1).view(np.uint8)[:] = payload
        self._counters.record("recv", payload.size, 0.0)
        return complete(None, record.src)

    def _deliver(self, reader: Reader, record, array: np.ndarray, tag: int, complete):
        """Copy the front ``record`` into ``array`` (or find a mismatch) and consume it."""
        error = mismatch(record.src, record.dtype, record.count, array, tag, self.rank)
        if error is None:
            reader.read_payload(record, array.reshape(-1).view(np.uint8))
        reader.consume(record)
        if error is not None:
            return complete(error)
        self._counters.record("recv", record.nbytes, 0.0)
        return complete(None, record.src)

    def _drive(self) -> list:
        """(Lock held.) Read the channels of every sender a posted receive may match,
        delivering or stashing each message; returns the completions to finish."""
        done = []
        while self._posted:
            wanted = set().union(*(r.peers for r in self._posted))
            progressed = False
            for src in sorted(wanted):
                reader = self._readers[src]
                if not reader.ready():
                    continue
                try:
                    record = reader.front()
                except OSError as exc:
                    done += self._lost_ring(src, exc)
                    continue
                if record is None:
                    continue
                progressed = True
                receive = next((r for r in self._posted if r.group_id == record.group and
                                r.tag == record.tag and src in r.peers), None)
                if receive is None:
                    self._stash_front(reader, record)
                else:
                    self._posted.remove(receive)
                    done.append(self._deliver(reader, record, receive.array, receive.tag,
                                              _completion(receive)))
            if not progressed:
                break
        return done

    def _stash_front(self, reader: Reader, record) -> None:
        payload = np.empty(record.nbytes, np.uint8)
        reader.read_payload(record, payload)
        reader.consume(record)
        key = (record.group, record.tag, record.src)
        self._stash.setdefault(key, deque()).append((next(self._arrival), record, payload))
        self.counts["stashed"] += 1

    def _lost_ring(self, src: int, exc: OSError) -> list:
        """(Lock held.) ``src``'s next message lies in a grown ring that cannot be mapped:
        its name was removed after ``src`` exited (``channel.py``), so every receive that
        could take it fails, now and later."""
        error = PeerLostError([src], f"the ring holding its next message cannot be mapped "
                              f"({exc}): it exited before this rank received it, and the "
                              "ring was removed since", self.rank, "recv")
        done = []
        for receive in [r for r in self._posted if src in r.peers]:
            done += self._fail(receive, error)
        return done

    def _fail(self, receive: Receive, error: BaseException) -> list:
        """(Lock held.) Withdraw a posted receive that cannot complete."""
        if receive in self._posted:
            self._posted.remove(receive)
            return [(receive, None, error)]
        return []

    def _checked(self, receive: Receive) -> list:
        """(Lock held.) Run the receive's check; a failure withdraws it."""
        try:
            receive.check()
        except (DistError, ValueError) as exc:
            return self._fail(receive, exc)
        return []

    # -- the Work progress protocol (see work.Work) ----------------------------------------

    def wait_for(self, receive: Receive, limit: float | None) -> None:
        """Drive until ``receive`` completes (or ``limit`` seconds pass, leaving it posted).

        Between drives it waits for the doorbell to change: spinning for ``RINGRT_P2P_SPIN_US``
        (longer for a large array while every rank has a core; yielding the core when ranks
        outnumber cores), then sleeping on the futex in slices; after each drive that leaves
        it incomplete, the receive's check runs.
        """
        end = None if limit is None else time.monotonic() + limit
        doorbell = self._doorbell
        spin = self._spin_seconds
        if not self._arena.oversubscribed:
            spin += min(receive.array.nbytes / SPIN_BYTES_PER_SECOND, SPIN_EXTRA_SECONDS)
        spin_until = time.perf_counter() + spin
        while True:
            seen = doorbell.value
            with self._lock:
                done = self._drive()
                if receive in self._posted:
                    done += self._checked(receive)
            _finish(done)
            if receive._done.is_set() or (end is not None and time.monotonic() >= end):
                return
            self._await_doorbell(seen, spin_until, end)

    def _await_doorbell(self, seen: int, spin_until: float, end: float | None) -> None:
        doorbell, oversubscribed = self._doorbell, self._arena.oversubscribed
        entry = self._waits
        entry[wakeups.WAITS] += 1
        start = time.perf_counter()
        while doorbell.value == seen and time.perf_counter() < spin_until:
            if oversubscribed:
                os.sched_yield()
        if doorbell.value != seen:
            wakeups.spun(entry, time.perf_counter() - start, satisfied=True)
            return
        wakeups.spun(entry, time.perf_counter() - start, satisfied=False)
        slice_s = SLICE_SECONDS if end is None else \
            max(0.0, min(SLICE_SECONDS, end - time.monotonic()))
        wakeups.sleep(entry, doorbell, self._doorbell_woken, self._doorbell_address, seen,
                      slice_s)

    def poll(self) -> None:
        """Drive once without blocking (``is_completed``), unless another thread is."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            done = self._drive()
            for receive in list(self._posted):
                done += self._checked(receive)
        finally:
            self._lock.release()
        _finish(done)

    def in_background(self, receive: Receive) -> None:
        """``receive`` got a callback: make sure something drives while nobody waits."""
        with self._background_wanted:
            receive.background = True
            if self._background is None and not self._closed:
                self._background = threading.Thread(target=self._drive_in_background,
                                                    name=f"ringrt-p2p-{self.rank}", daemon=True)
                self._background.start()
            self._background_wanted.notify()

    def _drive_in_background(self) -> None:
        while True:
            with self._background_wanted:
                while not self._closed and not any(r.background for r in list(self._posted)):
                    self._background_wanted.wait()
                if self._closed:
                    return
            seen = self._doorbell.value
            self.poll()
            if self._doorbell.value == seen:
                wakeups.sleep(self._background_waits, self._doorbell, self._doorbell_woken,
                              self._doorbell_address, seen, SLICE_SECONDS)

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Fail what is still posted, stop the background thread, release the channels
        (a reader drains what it never received, removing grown rings' names; a writer
        removes those of grown rings whose reader is gone: ``channel.py``)."""
        with self._background_wanted:
            if self._closed:
                return
            self._closed = True
            self._background_wanted.notify_all()
        if self._background is not None:
            futex.wake(self._doorbell_address)
            self._background.join(timeout=5)
        with self._lock:
            error = NotInitializedError("recv: the process group was destroyed")
            done = [(r, None, error) for r in self._posted]
            self._posted.clear()
            self._stash.clear()
            for reader in self._readers.values():
                reader.close()
        _finish(done)
        with self._send_lock:
            for peer, writer in self._writers.items():
                writer.close(reader_gone=peer in self._lost)

    def stats(self) -> dict:
        """``ringrt.stats()["p2p"]``: the path, rings grown, receives posted (not completed
        on arrival), messages stashed, sleeps on the doorbell."""
        grown = sum(w.grows for w in self._writers.values())
        return {"path": "shm", "grown_rings": grown, **self.counts,
                "sleeps": self._waits[wakeups.SLEEPS]}


def _completion(receive: Receive):
    def complete(error, sender=None):
        return receive, sender, error
    return complete


def _finish(done) -> None:
    """Complete receives (outside the lock: their callbacks may call back into p2p)."""
    for receive, sender, error in done:
        receive._finish(sender, error)
