"""Same-host point-to-point channels: one growable byte ring in shared memory per ordered pair.

A channel carries every point-to-point message from one rank (the writer) to one peer (the
reader), in the order sent, whatever their group or tag. It is a single-producer,
single-consumer ring of *records*::

    record = 64-byte head (kind u32, dtype u32, payload bytes u64,
                           group i64, sender i64, tag i64, element count i64, 16 pad)
             + payload, padded to 64 bytes

Records start at multiples of 64, so a head never straddles the end of the ring; a payload
may (it is then copied in two pieces). ``head`` (bytes ever written, set by the writer after
the record) and ``tail`` (bytes ever consumed, set by the reader) are 64-bit counters on
cache lines of their own; the writer's stores become visible in program order (x86 TSO, as
``shm.py`` assumes), so a reader that sees ``head`` move sees the whole record.

**Growth instead of blocking.** A writer never waits for its reader: ``isend`` must complete
even when the peer is not receiving yet, and two ranks may each send any number of messages
of any size before receiving. When a record does not fit, the writer makes a ring twice as
big (at least twice the record), in a new segment ``ringrt-PID-...-p2p`` (0600, O_EXCL,
mapped only if private: ``shm.map_private``), writes a *grow* record naming it into the old
ring, and carries on there. Room for one grow record is always kept free. The reader follows
the grow record, maps the new ring and unlinks its name. A ring that grew stays that size.

**Lifetimes.** The first ring of each channel lies in the writer's arena segment (mapped by
every peer at rendezvous), so small messages never involve a name. A grown ring's name lives
until its reader maps it; it is the only thing that can outlive its writer, on purpose: a
rank that sends and exits still has its messages delivered. Unread names are removed by the
reader when it closes (it drains its channels), by the writer when it closes and the reader is
gone, and otherwise, if both were killed, by the next job's sweep of dead ranks' segments
(``stale.py``).
"""

from __future__ import annotations

import ctypes
import os
import struct

import numpy as np

from ringrt._comm import shm, shm_files
from ringrt.errors import DistError

RECORD_ALIGN = 64
# One struct, not the 40-byte wire header: a record is read where it was written, by this
# user's processes only, and decoding it is on every message's path (one unpack_from).
RECORD_HEAD = struct.Struct("<IIQqqqq16x")         # 64 bytes
MESSAGE, GROW = 1, 2
_GROW_BODY = struct.Struct("<Q")                   # new capacity, then the segment's name
# Room always kept free for one grow record (64-byte head + capacity + a name of ~45 bytes).
GROW_RESERVE = 256
# The first ring of each channel, in the writer's arena segment. Messages up to ~32 KiB then
# never grow a ring (a 16 KiB ring exchange stays in it); the area costs (ranks - 1) x this
# per rank. A grown ring is at least GROWN_MIN_BYTES.
FIRST_RING_BYTES = 64 << 10
GROWN_MIN_BYTES = 1 << 20
_CONTROL = 128                                     # head at +0, tail at +64
_GROWN_DATA_AT = 4096                              # a grown segment: control page, then ring
NAME_SUFFIX = "-p2p"


def _aligned(nbytes: int) -> int:
    return -(-nbytes // RECORD_ALIGN) * RECORD_ALIGN


def record_bytes(payload_bytes: int) -> int:
    """The ring space one record with ``payload_bytes`` of payload takes."""
    return RECORD_ALIGN + _aligned(payload_bytes)


def _control_bytes(world_size: int) -> int:
    return -(-(world_size - 1) * _CONTROL // 4096) * 4096


def area_bytes(world_size: int) -> int:
    """The point-to-point area of one rank's arena segment: the control blocks of its
    channels to every peer (page-aligned), then their first rings."""
    return _control_bytes(world_size) + (world_size - 1) * FIRST_RING_BYTES


class Ring:
    """A view of one ring: its head and tail counters and its bytes."""

    def __init__(self, buffer, control_at: int, data_at: int, capacity: int, mapping=None,
                 path: str | None = None):
        self.head = ctypes.c_uint64.from_buffer(buffer, control_at)
        self.tail = ctypes.c_uint64.from_buffer(buffer, control_at + 64)
        self.data = np.frombuffer(buffer, np.uint8, capacity, data_at)
        self.capacity = capacity
        self.mapping = mapping            # a grown ring's own mmap (None: in the arena)
        self.path = path

    @classmethod
    def first(cls, segment, world_size: int, owner: int, peer: int) -> Ring:
        """The first ring from ``owner`` to ``peer``, in ``owner``'s arena ``segment``."""
        index = peer if peer < owner else peer - 1
        area = shm.CONTROL_BYTES
        data_at = area + _control_bytes(world_size) + index * FIRST_RING_BYTES
        return cls(segment.map, area + index * _CONTROL, data_at, FIRST_RING_BYTES)

    @classmethod
    def create_grown(cls, capacity: int, owner: int, peer: int) -> Ring:
        """A new ring in a segment of its own (named for the reader to map)."""
        path = shm_files.new_path(NAME_SUFFIX)
        mapping = shm.map_private(path, _GROWN_DATA_AT + capacity, create=True)
        return cls(mapping, 0, _GROWN_DATA_AT, capacity, mapping, path)

    @classmethod
    def open_grown(cls, name: str, capacity: int) -> Ring:
        """Map the ring a grow record names, and unlink its name (nothing is left behind)."""
        if os.path.basename(name) != name or not name.startswith(shm_files.SHM_PREFIX) or \
                not name.endswith(NAME_SUFFIX):
            raise OSError(f"a grow record names {name!r}, which is no ring of ringrt's")
        path = shm_files.path_of(name)
        mapping = shm.map_private(path, _GROWN_DATA_AT + capacity, create=False)
        shm_files.unlink(path)
        return cls(mapping, 0, _GROWN_DATA_AT, capacity, mapping, path)

    def write(self, at: int, source: np.ndarray) -> None:
        """Copy ``source`` (uint8) to ring position ``at`` (a counter), wrapping around."""
        start = at % self.capacity
        first = min(source.size, self.capacity - start)
        self.data[start:start + first] = source[:first]
        if first < source.size:
            self.data[:source.size - first] = source[first:]

    def read(self, at: int, into: np.ndarray) -> None:
        """Copy ``into.size`` bytes from ring position ``at`` into ``into`` (uint8)."""
        start = at % self.capacity
        first = min(into.size, self.capacity - start)
        into[:first] = self.data[start:start + first]
        if first < into.size:
            into[first:] = self.data[:into.size - first]

    def close(self) -> None:
        """Drop this view (and unmap a grown ring; the arena's first rings stay mapped)."""
        self.head = self.tail = self.data = None
        if self.mapping is not None:
            try:
                self.mapping.close()
            except BufferError:       # a view is still alive somewhere; it dies with it
                pass
            self.mapping = None


class Writer:
    """The writing end of the channel from this rank to one peer (one thread at a time)."""

    def __init__(self, ring: Ring, owner: int, peer: int):
        self.ring = ring
        self.owner, self.peer = owner, peer
        self.head = ring.head.value
        self.grown_paths: list[str] = []   # segments made for this reader (see close)
        self.grows = 0

    def append(self, dtype: int, group: int, src: int, tag: int, count: int,
               payload: np.ndarray) -> None:
        """Write one message record (``payload``: uint8, may be empty)."""
        nbytes = payload.size
        need = RECORD_ALIGN + _aligned(nbytes)
        ring = self.ring
        if need > ring.capacity - (self.head - ring.tail.value) - GROW_RESERVE:
            self._grow(need)
            ring = self.ring
        head = self.head
        if nbytes:
            ring.write(head + RECORD_ALIGN, payload)
        RECORD_HEAD.pack_into(ring.data, head % ring.capacity, MESSAGE, dtype, nbytes, group,
                              src, tag, count)
        self.head = head = head + need
        ring.head.value = head

    def _grow(self, need: int) -> None:
        old = self.ring
        capacity = max(GROWN_MIN_BYTES, 2 * old.capacity, 2 * (need + GROW_RESERVE))
        capacity = -(-capacity // 4096) * 4096
        try:
            new = Ring.create_grown(capacity, self.owner, self.peer)
        except OSError as exc:
            raise DistError(
                f"rank {self.owner}: a point-to-point message to rank {self.peer} needs a "
                f"{capacity}-byte ring in {shm_files.SHM_DIR}, which cannot be made ({exc}); nothing "
                f"was sent. Free space there (df {shm_files.SHM_DIR}; Docker: --shm-size), or set "
                "RINGRT_P2P=sockets on every rank") from exc
        self.grown_paths.append(new.path)
        name = os.path.basename(new.path).encode()
        body = _GROW_BODY.pack(capacity) + name
        old.write(self.head + RECORD_ALIGN, np.frombuffer(body, np.uint8))
        RECORD_HEAD.pack_into(old.data, self.head % old.capacity, GROW, 0, len(body), 0, 0, 0, 0)
        old.head.value = self.head + record_bytes(len(body))
        self.ring, self.head = new, 0
        self.grows += 1
        old.close()

    def close(self, reader_gone: bool) -> None:
        """Unmap; remove the names of grown rings the reader can no longer map."""
        self.ring.close()
        if reader_gone:
            for path in self.grown_paths:    # a path the reader mapped is gone already
                shm_files.unlink(path)


class Record:
    """A message at the front of a channel: what its head says, and where its payload is."""

    __slots__ = ("at", "count", "dtype", "group", "nbytes", "src", "tag")

    def __init__(self, fields: tuple, at: int):
        _kind, self.dtype, self.nbytes, self.group, self.src, self.tag, self.count = fields
        self.at = at


class Reader:
    """The reading end of the channel from one peer to this rank (one thread at a time)."""

    def __init__(self, ring: Ring):
        self.ring = ring
        self.tail = ring.tail.value

    def ready(self) -> bool:
        """Whether a record waits (cheap: one shared read)."""
        return self.ring.head.value != self.tail

    def front(self) -> Record | None:
        """The first unread message, or None; follows grow records on the way.

        Raises:
            OSError: a grown ring cannot be mapped (its name was removed: see the module
                docstring).
        """
        while True:
            ring = self.ring
            if ring.head.value == self.tail:
                return None
            fields = RECORD_HEAD.unpack_from(ring.data, self.tail % ring.capacity)
            kind, nbytes = fields[0], fields[2]
            if kind == MESSAGE:
                return Record(fields, self.tail + RECORD_ALIGN)
            if kind != GROW:
                raise OSError(f"corrupt point-to-point channel: record kind {kind}")
            body = np.empty(nbytes, np.uint8)
            ring.read(self.tail + RECORD_ALIGN, body)
            capacity = _GROW_BODY.unpack_from(body)[0]
            new = Ring.open_grown(bytes(body[_GROW_BODY.size:]).decode(), capacity)
            self._advance(record_bytes(nbytes))
            ring.close()
            self.ring, self.tail = new, 0

    def read_payload(self, record: Record, into: np.ndarray) -> None:
        """Copy the payload of ``record`` (the front one) into ``into`` (uint8, its size)."""
        self.ring.read(record.at, into)

    def consume(self, record: Record) -> None:
        """Drop the front record."""
        self._advance(record_bytes(record.nbytes))

    def _advance(self, nbytes: int) -> None:
        self.tail += nbytes
        self.ring.tail.value = self.tail

    def close(self) -> None:
        """Drain what was never received (unlinking grown rings it names), then unmap."""
        try:
            while (record := self.front()) is not None:
                self.consume(record)
        except OSError:
            pass
        self.ring.close()
