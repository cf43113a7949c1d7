"""Point-to-point: ``send``/``recv`` and their async forms, matched by (sender, tag).

Signatures follow the spec (``send(array, dst, tag=0)``, ``recv(array, src=None, tag=0)``),
with ``group`` after ``tag``; pass it by keyword as in torch. Messages from one sender with
one tag arrive in the order sent. ``recv(src=None)`` takes a message with the tag from any
member (one that arrived before the call first, earliest first). Point-to-point messages are
outside the collectives' sequence numbering, so they may interleave freely with collectives.

Two paths, chosen once per job (every rank computes the same from the address cards):

- **shared memory** (``_comm/shm_p2p.py``) when the world's ranks share a host and its
  shared-memory arena (so not with ``RINGRT_NO_SHM``, ``RINGRT_TRANSPORT=tcp`` or
  ``RINGRT_P2P=sockets`` on any rank): a message is copied into a ring the receiver maps and
  copied out into the receiving array; a receive completes on whichever thread drives it
  (its waiter), not on the executor.
- **sockets** otherwise: messages go through the transport like the collectives' (ipc on one
  host, tcp across hosts), and a receive is a job of the executor.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from ringrt import _validate
from ringrt._algorithms.segments import segments
from ringrt._comm import wire
from ringrt._comm.exchange import HEADER_BYTES, INLINE_MAX_BYTES, POLL_SLICE_MS
from ringrt._comm.shm_p2p import mismatch
from ringrt._comm.work import Work
from ringrt._deadline import Deadline
from ringrt._observe.observer import P2P_RECV, P2P_SEND
from ringrt._observe.recorder import STATE as POSTED_STATE
from ringrt._process_group import NonMember, ProcessGroup
from ringrt.distributed import resolve
from ringrt.errors import TimeoutError

Group = ProcessGroup | NonMember | None     # None: the default group

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
    lost = pg.comm.sentinel.lost
    if dst in lost:
        raise pg.lost_error({dst: lost[dst]}, name, None)
    return pg, tag


def _send_shm(pg, array: np.ndarray, dst: int, tag: int) -> None:
    pg.comm.counters.record("send", array.nbytes, 0.0)
    pg.comm.p2p.send(dst, pg.group_id, tag, array)


def _recorded(pg, kind: str, peer, tag: int, array: np.ndarray, run):
    """``run()``, kept in the flight recorder (and timeline) as a point-to-point op."""
    observer = pg.comm.observer
    record = observer.p2p(kind, pg.group_id, peer, tag, wire.DTYPE_CODES[array.dtype],
                          array.size)
    try:
        result = run()
    except BaseException as error:
        observer.finished(record, error)
        raise
    observer.finished(record, None)
    return result


def send(array: np.ndarray, dst: int, tag: int = 0, group: Group = None) -> None:
    """Send ``array`` to global rank ``dst``; returns once ``array`` may be reused (it never
    waits for ``dst`` to receive).

    Raises:
        TypeError / ValueError: bad array, ``dst`` or tag.
        PeerLostError: ``dst`` is known to be lost, or is lost while a large message leaves.
        TimeoutError: a large message did not leave within the group timeout (sockets).
    """
    pg, tag = _prepare_send("send", array, dst, tag, group)
    _recorded(pg, P2P_SEND, dst, tag, array, lambda: _send(pg, array, dst, tag))


def _send(pg, array: np.ndarray, dst: int, tag: int) -> None:
    if pg.comm.p2p is not None:
        _send_shm(pg, array, dst, tag)
        return
    deadline = Deadline(pg.timeout)
    check = _waiter(pg, "send", {dst}, deadline, tag)
    for tracker in _send_now(pg, array, dst, tag, copy=False):
        while not tracker.done:
            check()
            try:
                tracker.wait(POLL_SLICE_MS / 1000)
            except zmq.NotDone:
                pass


def isend(array: np.ndarray, dst: int, tag: int = 0, group: Group = None) -> Work:
    """Start sending ``array`` to ``dst`` (a snapshot is taken, so ``array`` may be reused
    at once). Returns a completed-on-send Work."""
    pg, tag = _prepare_send("isend", array, dst, tag, group)
    _recorded(pg, P2P_SEND, dst, tag, array, lambda: _isend(pg, array, dst, tag))
    return Work.finished(f"isend to {dst} (tag {tag})")


def _isend(pg, array: np.ndarray, dst: int, tag: int) -> None:
    if pg.comm.p2p is not None:
        _send_shm(pg, array, dst, tag)
    else:
        _send_now(pg, array, dst, tag, copy=True)


def recv(array: np.ndarray, src: int | None = None, tag: int = 0, group: Group = None) -> int:
    """Receive into ``array`` from global rank ``src`` (None: any member).

    Returns:
        The sender's global rank.

    Raises:
        TypeError / ValueError: bad array, ``src`` or tag.
        CollectiveMismatchError: the sender's array has another dtype or size.
        PeerLostError: the sender died or went silent.
        TimeoutError: no message within the group's timeout.
    """
    pg, tag = _prepare_recv("recv", array, src, group, tag)
    return _recorded(pg, P2P_RECV, src, tag, array, lambda: _recv(pg, array, src, tag))


def _recv(pg, array: np.ndarray, src, tag: int) -> int:
    if pg.comm.p2p is None:
        return pg.comm.executor.run(_socket_job(pg, "recv", array, src, tag), "recv")
    sender = _receive_ready(pg, array, src, tag)
    if sender is not None:
        return sender
    return _post_shm(pg, "recv", array, src, tag).result()


def irecv(array: np.ndarray, src: int | None = None, tag: int = 0,
          group: Group = None) -> Work:
    """Start receiving into ``array``; ``Work.result()`` is the sender's global rank.

    On one host the receive completes on the thread that waits for it (or asks
    ``is_completed``), or in the background once a done-callback is added; over sockets it
    runs on the executor, after the ops queued before it.
    """
    pg, tag = _prepare_recv("irecv", array, src, group, tag)
    _posted(pg, array, src, tag)
    if pg.comm.p2p is None:
        return pg.comm.executor.submit(_socket_job(pg, "irecv", array, src, tag), "irecv")
    sender = _receive_ready(pg, array, src, tag)
    if sender is not None:
        return Work.finished(f"irecv from {sender} (tag {tag})", sender)
    return _post_shm(pg, "irecv", array, src, tag)


def _posted(pg, array: np.ndarray, src, tag: int) -> None:
    """An irecv enters the flight recorder as posted (its completion is not tracked there: a
    done-callback would start shared memory's background progress thread)."""
    record = pg.comm.observer.p2p(P2P_RECV, pg.group_id, src, tag,
                                  wire.DTYPE_CODES[array.dtype], array.size)
    record[POSTED_STATE] = "posted (irecv)"


def _prepare_recv(name, array, src, group, tag):
    pg = _member_group(group, name)
    rank = pg.comm.rank
    _validate.array(name, array, rank, writable=True)
    if src is not None:
        _validate.root(name, src, pg.members, rank, "src")
        if src == rank:
            raise ValueError(f"{name}: rank {rank} cannot receive from itself")
    return pg, _check_tag(name, tag, rank)


def _peers(pg, src) -> set:
    return set(pg.members) - {pg.comm.rank} if src is None else {src}


def _receive_ready(pg, array: np.ndarray, src, tag: int) -> int | None:
    peers = pg.members if src is None else None
    return pg.comm.p2p.receive_ready(array, src, tag, pg.group_id,
                                     peers and [q for q in peers if q != pg.comm.rank])


def _post_shm(pg, name: str, array: np.ndarray, src, tag: int) -> Work:
    peers = _peers(pg, src)
    check = _waiter(pg, name, peers, Deadline(pg.timeout), tag)
    return pg.comm.p2p.post(name, array, src, tag, pg.group_id, peers, check)


def _socket_job(pg, name: str, array: np.ndarray, src, tag: int):
    def job():
        check = _waiter(pg, name, _peers(pg, src), Deadline(pg.timeout), tag)
        start = time.perf_counter()
        sender = _receive(pg, array, src, tag, check)
        pg.comm.counters.record("recv", array.nbytes, time.perf_counter() - start)
        return sender
    return job


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
    problem = mismatch(sender, header.dtype, header.count, array, tag, pg.comm.rank)
    for index, (a, b) in enumerate(pieces):
        if index:
            header, first, payload = mailbox.take(key, check)
        if problem is None:
            data = first.buffer[HEADER_BYTES:] if header.flags & wire.INLINE else payload
            flat[a:b] = np.frombuffer(data, np.uint8)
    if problem is not None:
        raise problem
    return sender


def _itemsize(dtype_code: int) -> int:
    dtype = wire.CODE_DTYPES.get(dtype_code)
    return 1 if dtype is None else dtype.itemsize
