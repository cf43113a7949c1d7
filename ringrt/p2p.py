"""Point-to-point: ``send``/``recv`` and their async forms, matched by (sender, tag).

Signatures follow the spec (``send(array, dst, tag=0)``, ``recv(array, src=None, tag=0)``),
with ``group`` after ``tag``; pass it by keyword as in torch. Messages from one sender with
one tag arrive in the order sent. ``recv(src=None)`` takes the
earliest-arrived message with the tag from any member. Point-to-point messages are outside
the collectives' sequence numbering, so they may interleave freely with collectives.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from ringrt import _validate
from ringrt._algorithms.segments import segments
from ringrt._comm import wire
from ringrt._comm.exchange import HEADER_BYTES, INLINE_MAX_BYTES, POLL_SLICE_MS
from ringrt._comm.work import Work
from ringrt._deadline import Deadline
from ringrt._process_group import NonMember
from ringrt.distributed import resolve
from ringrt.errors import CollectiveMismatchError, TimeoutError

_SEND = wire.OP_CODES["send"]


def _member_group(group, name):
    pg = resolve(group, name)
    if isinstance(pg, NonMember):
        raise ValueError(f"{name}: this rank is not a member of {pg}")
    return pg


def _check_tag(name: str, tag, rank: int) -> int:
    if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= tag < 2**62:
        raise ValueError(f"{name}: tag must be an int in [0, 2**62), got {tag!r} on rank {rank}")
    return int(tag)


def _waiter(pg, name: str, peers, deadline: Deadline, tag: int):
    """The check run while a point-to-point op waits: lost peers, then the deadline."""
    def check():
        lost = {r: why for r, why in pg.comm.sentinel.lost.items() if r in peers}
        if lost:
            raise pg.lost_error(lost, name, None)
        if deadline.expired():
            raise TimeoutError(f"{name}(tag={tag})", None, sorted(peers), deadline.timeout,
                               pg.comm.rank, hint="Is the matching send/recv ever called?")
    return check


def _send_now(pg, array: np.ndarray, dst: int, tag: int, copy: bool) -> list:
    pg.comm.counters.record("send", array.nbytes, 0.0)
    flat = array.reshape(-1).view(np.uint8)
    dtype = wire.DTYPE_CODES[array.dtype]
    pieces = segments(0, flat.size, 1) or [(0, 0)]
    trackers = []
    for index, (a, b) in enumerate(pieces):
        piece = flat[a:b]
        if piece.nbytes <= INLINE_MAX_BYTES:
            header = wire.pack(wire.P2P, _SEND, dtype, 0, wire.INLINE, pg.group_id,
                                pg.comm.rank, tag, array.size, -1, index)
            pg.comm.transport.send(dst, b"".join((header, piece.data)))
            continue
        header = wire.pack(wire.P2P, _SEND, dtype, 0, 0, pg.group_id, pg.comm.rank, tag,
                            array.size, -1, index)
        trackers.append(pg.comm.transport.send(dst, header, piece.copy() if copy else piece,
                                               track=not copy))
    return [t for t in trackers if t is not None]


def _prepare_send(name: str, array, dst, tag, group):
    pg = _member_group(group, name)
    rank = pg.comm.rank
    _validate.array(name, array, rank)
    _validate.root(name, dst, pg.members, rank, "dst")
    tag = _check_tag(name, tag, rank)
    if dst == rank:
        raise ValueError(f"{name}: rank {rank} cannot send to itself")
    return pg, tag


def send(array, dst: int, tag: int = 0, group=None) -> None:
    """Send ``array`` to global rank ``dst``; returns once zmq no longer needs the buffer.

    Raises:
        TypeError / ValueError: bad array, ``dst`` or tag. PeerLostError, TimeoutError.
    """
    pg, tag = _prepare_send("send", array, dst, tag, group)
    deadline = Deadline(pg.timeout)
    check = _waiter(pg, "send", {dst}, deadline, tag)
    for tracker in _send_now(pg, array, dst, tag, copy=False):
        while not tracker.done:
            check()
            try:
                tracker.wait(POLL_SLICE_MS / 1000)
            except zmq.NotDone:
                pass


def isend(array, dst: int, tag: int = 0, group=None) -> Work:
    """Start sending ``array`` to ``dst`` (a snapshot is taken, so ``array`` may be reused
    at once). Returns a completed-on-send Work."""
    pg, tag = _prepare_send("isend", array, dst, tag, group)
    _send_now(pg, array, dst, tag, copy=True)
    work = Work(f"isend to {dst} (tag {tag})")
    work._finish()
    return work


def recv(array, src: int | None = None, tag: int = 0, group=None) -> int:
    """Receive into ``array`` from global rank ``src`` (None: any member).

    Returns:
        The sender's global rank.

    Raises:
        TypeError / ValueError: bad array, ``src`` or tag.
        CollectiveMismatchError: the sender's array has another dtype or size.
        PeerLostError, TimeoutError.
    """
    pg, job = _prepare_recv("recv", array, src, group, tag)
    return pg.comm.executor.run(job, "recv")


def irecv(array, src: int | None = None, tag: int = 0, group=None) -> Work:
    """Start receiving into ``array``; ``Work.result()`` is the sender's global rank."""
    pg, job = _prepare_recv("irecv", array, src, group, tag)
    return pg.comm.executor.submit(job, "irecv")


def _prepare_recv(name, array, src, group, tag):
    pg = _member_group(group, name)
    rank = pg.comm.rank
    _validate.array(name, array, rank, writable=True)
    if src is not None:
        _validate.root(name, src, pg.members, rank, "src")
    tag = _check_tag(name, tag, rank)

    def job():
        peers = set(pg.members) - {rank} if src is None else {src}
        check = _waiter(pg, name, peers, Deadline(pg.timeout), tag)
        start = time.perf_counter()
        sender = _receive(pg, array, src, tag, check)
        pg.comm.counters.record("recv", array.nbytes, time.perf_counter() - start)
        return sender
    return pg, job


def _receive(pg, array: np.ndarray, src, tag: int, check) -> int:
    mailbox = pg.comm.mailbox
    if src is None:
        header, first, payload = mailbox.take_any(pg.group_id, tag, check)
    else:
        header, first, payload = mailbox.take((wire.P2P, pg.group_id, tag, src), check)
    sender = header.src
    key = (wire.P2P, pg.group_id, tag, sender)
    pieces = segments(0, max(header.count, 0) * _itemsize(header.dtype), 1) or [(0, 0)]
    flat = array.reshape(-1).view(np.uint8)
    problem = None
    if header.dtype != wire.DTYPE_CODES[array.dtype] or header.count != array.size:
        problem = (f"rank {sender} sent {wire.dtype_name(wire.CODE_DTYPES.get(header.dtype))}"
                   f"[{header.count}] with tag {tag} but rank {pg.comm.rank} receives into "
                   f"{wire.dtype_name(array.dtype)}[{array.size}]")
    for index, (a, b) in enumerate(pieces):
        if index:
            header, first, payload = mailbox.take(key, check)
        if problem is None:
            data = first.buffer[HEADER_BYTES:] if header.flags & wire.INLINE else payload
            flat[a:b] = np.frombuffer(data, np.uint8)
    if problem is not None:
        raise CollectiveMismatchError("recv", tag, [sender], pg.comm.rank, problem)
    return sender


def _itemsize(dtype_code: int) -> int:
    dtype = wire.CODE_DTYPES.get(dtype_code)
    return 1 if dtype is None else dtype.itemsize
