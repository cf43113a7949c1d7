"""Sending and receiving the messages of one op, and everything that can go wrong meanwhile.

:class:`Mailbox` demultiplexes this rank's inbox: messages for the op being run are returned,
messages for later ops (or other groups, or point-to-point) are stashed until asked for, and
stale messages of ops that ended in an error are dropped. :class:`Exchange` is one op's view:
``send`` / ``recv`` by group rank, with the op's header stamped on every message.

While an op waits it watches for, in order: a notice that another rank found a mismatch in
this op, a lost peer (from the sentinel), and the op's deadline. Receiving a message whose
header describes a different op than ours is a mismatch; it is raised here and announced to
the rest of the group so that nobody hangs.
"""

from __future__ import annotations

import itertools
from collections import deque

import msgpack
import numpy as np
import zmq

from ringrt._comm import wire
from ringrt._comm.shm import ShmOp
from ringrt._comm.wire import DATA, HEADER_BYTES, INLINE, MISMATCH, P2P
from ringrt.errors import (
    CollectiveMismatchError,
    DistError,
    TimeoutError,
)

# Payloads up to this size travel inside the header frame (one copy beats a second zmq
# frame for small messages; pyzmq's own zero-copy threshold is 64 KiB).
INLINE_MAX_BYTES = 64 * 1024
POLL_SLICE_MS = 50          # how often a waiting op re-checks lost peers and notices


class Mailbox:
    """This rank's inbox, demultiplexed by (kind, group, seq or tag, sender).

    ``wait_clock`` (``ringrt._observe.waits.WaitClock``, while tracing): :meth:`take` and
    :meth:`take_any` add the time they take to it.
    """

    def __init__(self, transport, rank: int, wait_clock=None):
        self.transport = transport
        self.rank = rank
        self.wait_clock = wait_clock
        self.dropped = 0                      # malformed or stale messages
        self._stash: dict[tuple, deque] = {}
        self._arrival = itertools.count()
        self._notices: dict[tuple, tuple] = {}  # (group, seq) -> (kind, origin, payload)
        self._floor: dict[int, int] = {}        # group -> last seq finished here
        self.poison: dict[int, tuple] = {}      # group -> mismatch notice of a finished op
        self._unclean: dict[int, set] = {}      # group -> seqs that ended in an error here

    def finished(self, group_id: int, seq: int, clean: bool) -> None:
        """Op ``seq`` of group ``group_id`` is over here: drop whatever is left of it.

        After a *clean* finish every message of the op has been consumed, so a leftover or
        a late arrival can only mean another rank ran a different op (e.g. another root)
        there: the group is poisoned and the next op raises CollectiveMismatchError.
        """
        self._floor[group_id] = seq
        if not clean:
            self._unclean.setdefault(group_id, set()).add(seq)
        if not self._stash and not self._notices:
            return
        for key in [k for k in self._stash if k[0] == DATA and k[1] == group_id and k[2] <= seq]:
            queued = self._stash.pop(key)
            self.dropped += len(queued)
            self._leftover(queued[0][1])
        for key in [k for k in self._notices if k[0] == group_id and k[1] <= seq]:
            del self._notices[key]

    def _leftover(self, header) -> None:
        if header.seq in self._unclean.get(header.group, ()):
            return
        detail = (f"rank {header.src} sent data for op #{header.seq} "
                  f"({wire.describe_signature(header.signature())}) that rank {self.rank} "
                  "never expected: the ranks ran different ops there")
        self.poison.setdefault(header.group, (MISMATCH, self.rank, [detail, [header.src]]))

    def notice(self, group_id: int, seq: int):
        """The mismatch notice for this op, if one arrived."""
        return self._notices.get((group_id, seq))

    def take(self, key: tuple, wait) -> tuple:
        """Return the next message with ``key``, receiving (and filing others) until it comes.

        ``wait(timeout_slices)`` is called between polls; it raises to end the wait.
        """
        if self.wait_clock is not None:
            return self.wait_clock.timed(self._take, key, wait)
        return self._take(key, wait)

    def _take(self, key: tuple, wait) -> tuple:
        queued = self._stash.get(key)
        if queued:
            entry = queued.popleft()
            if not queued:
                del self._stash[key]
            return entry[1:]
        while True:
            message = self.transport.recv(POLL_SLICE_MS)
            filed = None if message is None else self._file(*message)
            if filed is None:
                wait()
                continue
            if filed[0] == key:
                return filed[1]
            self.stash(*filed)

    def take_any(self, group_id: int, tag: int, wait) -> tuple:
        """Point-to-point receive from any sender: the earliest message with this tag."""
        if self.wait_clock is not None:
            return self.wait_clock.timed(self._take_any, group_id, tag, wait)
        return self._take_any(group_id, tag, wait)

    def _take_any(self, group_id: int, tag: int, wait) -> tuple:
        while True:
            candidates = [(q[0][0], k) for k, q in self._stash.items()
                          if k[0] == P2P and k[1] == group_id and k[2] == tag and q]
            if candidates:
                return self._take(min(candidates)[1], wait)   # timed by take_any
            message = self.transport.recv(POLL_SLICE_MS)
            if message is None:
                wait()
                continue
            filed = self._file(*message)
            if filed is None:
                wait()
                continue
            key, entry = filed
            if key[0] == P2P and key[1] == group_id and key[2] == tag:
                return entry
            self.stash(key, entry)

    def _file(self, first, payload):
        """Classify one received message: ``(key, (header, first, payload))`` for data (the
        caller returns or stashes it); notices are recorded and dropped messages counted,
        both returning None."""
        try:
            header = wire.unpack(first.buffer)
        except wire.BadFrame:
            self.dropped += 1
            return None
        if header.kind == MISMATCH:
            self._record_notice(header, first)
            return None
        if header.kind == DATA and header.seq <= self._floor.get(header.group, -1):
            self.dropped += 1
            self._leftover(header)
            return None
        if header.kind not in (DATA, P2P):
            self.dropped += 1
            return None
        key = (header.kind, header.group, header.seq, header.src)
        return key, (header, first, payload)

    def pump(self) -> None:
        """File whatever is waiting in the inbox without blocking (notices, early data)."""
        while True:
            message = self.transport.recv(0)
            if message is None:
                return
            filed = self._file(*message)
            if filed is not None:
                self.stash(*filed)

    def stash(self, key, entry) -> None:
        self._stash.setdefault(key, deque()).append((next(self._arrival), *entry))

    def _record_notice(self, header, first) -> None:
        try:
            payload = msgpack.unpackb(bytes(first.buffer[HEADER_BYTES:]))
        except Exception:  # noqa: BLE001 - garbage from the network is dropped
            self.dropped += 1
            return
        if not _is_notice_payload(payload):    # raising it later would fail on its shape
            self.dropped += 1
            return
        notice = (header.kind, header.src, payload)
        if header.seq <= self._floor.get(header.group, -1):
            if header.kind == MISMATCH:
                self.poison.setdefault(header.group, notice)
            return
        self._notices.setdefault((header.group, header.seq), notice)


def _is_notice_payload(payload) -> bool:
    """A mismatch notice carries ``[detail, ranks]``: text and a list of global ranks."""
    return (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], str)
            and isinstance(payload[1], list) and all(type(r) is int for r in payload[1]))


class Exchange:
    """The messages of one op (``seq``) of one group, addressed by group rank."""

    def __init__(self, group, seq: int, spec, deadline):
        self.group = group
        self.comm = group.comm
        self.rank = group.rank
        self.size = group.size
        self.seq = seq
        self.spec = spec
        self.deadline = deadline
        self.signature = spec.signature()
        self._awaiting: list[int] = []          # global ranks this op is waiting for
        self._sent = [0] * group.size
        self._received = [0] * group.size
        self._trackers: list = []
        self._header_fields = (spec.op, spec.dtype_code, spec.redop, group.group_id,
                               self.comm.rank, seq, spec.count, spec.root)
        # group + 1: an all-zero block (a rank that has not published yet) matches no op
        self.published = (group.group_id + 1, seq, *self.signature, int(spec.shm))
        self.shm = None                       # the op's ShmOp, released by the group on failure
        if spec.shm:
            self.shm = self.shm_over(group.arena, self.rank, self.size, self.check_while_shm,
                                     spec.name)

    def shm_over(self, arena, rank: int, size: int, check, kind: str = "other"):
        """This op's steps over ``arena`` (the group's, or its host's for two-level ops), as
        rank ``rank`` of ``size``: a :class:`~ringrt._comm.shm.ShmOp` the group releases if
        the op fails midway."""
        self.shm = ShmOp(arena, rank, size, self.seq, self.published, check, kind)
        return self.shm

    # -- sending --------------------------------------------------------------------------

    def send(self, peer: int, data, snapshot: bool = False) -> None:
        """Send ``data`` (ndarray, bytes, memoryview or received zmq.Frame) to group rank
        ``peer``.

        Large ndarrays go zero-copy and are tracked until the op ends, so zmq never reads
        the caller's buffer after the op returns. ``snapshot=True`` means the caller will
        overwrite ``data`` right away: a large one is then copied first.
        """
        op, dtype, redop, group_id, src, seq, count, root = self._header_fields
        index = self._sent[peer]
        self._sent[peer] = index + 1
        dst = self.group.members[peer]
        nbytes = data.nbytes if isinstance(data, np.ndarray) else len(memoryview(data).cast("B"))
        if nbytes <= INLINE_MAX_BYTES:
            header = wire.pack(DATA, op, dtype, redop, INLINE, group_id, src, seq, count, root,
                                index)
            body = data.reshape(-1).view(np.uint8).data if isinstance(data, np.ndarray) else data
            self.comm.transport.send(dst, b"".join((header, body)))
            return
        header = wire.pack(DATA, op, dtype, redop, 0, group_id, src, seq, count, root, index)
        if isinstance(data, np.ndarray) and snapshot:
            self.comm.transport.send(dst, header, data.reshape(-1).view(np.uint8).copy())
        elif isinstance(data, np.ndarray):
            tracker = self.comm.transport.send(dst, header, data.reshape(-1).view(np.uint8),
                                               track=True)
            self._trackers.append(tracker)
        else:
            self.comm.transport.send(dst, header, data)

    # -- receiving ------------------------------------------------------------------------

    def recv(self, peer: int):
        """The payload of the next message from group rank ``peer`` (read-only buffer: a
        memoryview for inline payloads, the zmq.Frame itself for large ones, which can be
        forwarded zero-copy)."""
        src = self.group.members[peer]
        self._awaiting = [src]
        header, first, payload = self.comm.mailbox.take(
            (DATA, self.group.group_id, self.seq, src), self._check)
        self._awaiting = []
        if header.signature() != self.signature:
            self.mismatch([src], header.signature())
        if header.index != self._received[peer]:
            raise DistError(
                f"protocol error on rank {self.comm.rank}: message {header.index} of "
                f"{self.spec.name} (op #{self.seq}) from rank {src}, expected "
                f"{self._received[peer]}; do all ranks use the same RINGRT_ALGO and ringrt "
                "version?"
            )
        self._received[peer] += 1
        if header.flags & INLINE:
            return first.buffer[HEADER_BYTES:]
        return payload

    def as_array(self, buffer, dtype, count: int, peer: int) -> np.ndarray:
        """View a received payload as ``count`` elements of ``dtype`` (read-only, no copy);
        a payload of another size means the sender called a different op."""
        dtype = np.dtype(dtype)
        nbytes = memoryview(buffer).nbytes
        if nbytes != count * dtype.itemsize:      # checked first: frombuffer raises on a ragged one
            src = self.group.members[peer]
            self.mismatch([src], None, f"rank {src} sent {nbytes} bytes "
                                       f"({nbytes / dtype.itemsize:g} elements) of "
                                       f"{self.spec.name} where rank {self.comm.rank} expected "
                                       f"{count}")
        return np.frombuffer(buffer, dtype=dtype)

    # -- ending ---------------------------------------------------------------------------

    def finish(self) -> None:
        """Wait until zmq has released every zero-copy buffer of this op."""
        for tracker in self._trackers:
            while not tracker.done:
                self._check()
                try:
                    tracker.wait(POLL_SLICE_MS / 1000)
                except zmq.NotDone:
                    pass
        self._trackers.clear()

    # -- failure detection ----------------------------------------------------------------

    def check_while_shm(self, waiting_for=()) -> None:
        """The shared-memory wait's check: read the inbox for notices, then :meth:`_check`.
        ``waiting_for`` (group ranks) is named if the op times out."""
        self._awaiting = [self.group.members[q] for q in waiting_for]
        self.comm.mailbox.pump()
        self._check()

    def _check(self) -> None:
        """Raise if this op cannot complete: notice, mismatch, lost peer, or deadline."""
        if self.group.arena is not None:
            self.check_published(self.group.arena, range(self.size))
        mailbox = self.comm.mailbox
        notice = mailbox.notice(self.group.group_id, self.seq)
        if notice is not None:
            self._raise_notice(notice)
        if self.group.group_id in mailbox.poison:
            self.group.check_usable(self.spec.name, self.seq)
        lost = self.group.lost_members()
        if lost:
            self.group.break_with_lost(lost)
            raise self.group.lost_error(lost, self.spec.name, self.seq)
        if self.deadline.expired():
            error = TimeoutError(self.spec.name, self.seq, self._awaiting, self.deadline.timeout,
                                 self.comm.rank,
                                 hint="Check that every rank of the group calls this op; "
                                      "raise the timeout with init_process_group(timeout=...) "
                                      "or ringrun --timeout.")
            self.group.break_with(error)
            raise error

    def _raise_notice(self, notice) -> None:
        _kind, origin, (detail, ranks) = notice
        error = CollectiveMismatchError(self.spec.name, self.seq, ranks, self.comm.rank,
                                        f"rank {origin} reports: {detail}")
        self.group.break_with(error)
        raise error

    def check_published(self, arena, ranks) -> None:
        """Raise CollectiveMismatchError if a peer on ``arena`` published another call for
        this op; ``ranks[i]`` is the group rank at arena index i (the group's arena: every
        rank; a host's arena: that host's ranks)."""
        for index, theirs in arena.disagreeing(range(len(ranks)), self.published):
            if ranks[index] != self.rank:
                self._mismatch_published(ranks[index], theirs)

    def _mismatch_published(self, peer: int, theirs: tuple) -> None:
        mine = self.published
        detail = (f"rank {self.comm.rank} called {wire.describe_signature(mine[2:7])} but rank "
                  f"{peer} called {wire.describe_signature(theirs[2:7])}")
        if mine[2:7] == theirs[2:7]:
            detail += (" with another algorithm (shared memory vs sockets): is RINGRT_ALGO or "
                       "RINGRT_NO_SHM set differently on some ranks?")
        self.mismatch([peer], None, detail)

    def mismatch(self, ranks: list[int], their_signature, detail: str | None = None):
        """Raise CollectiveMismatchError here and tell the rest of the group."""
        if detail is None:
            detail = (f"rank {self.comm.rank} called {wire.describe_signature(self.signature)}"
                      f" but rank {ranks[0]} called {wire.describe_signature(their_signature)}")
        involved = sorted(set(ranks) | {self.comm.rank})
        self.group.announce(MISMATCH, self.seq, self.spec, [detail, involved])
        error = CollectiveMismatchError(self.spec.name, self.seq, involved, self.comm.rank,
                                        detail)
        self.group.break_with(error)
        raise error
