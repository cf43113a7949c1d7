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
- **sockets** otherwise (``_comm/socket_p2p.py``): messages go through the transport like
  the collectives' (ipc on one host, tcp across hosts), and a receive is a job of the
  executor.

The group holds one of the two (``ProcessGroup.p2p``: the same methods); this module
validates, records the op and hands it over.
"""

from __future__ import annotations

import numpy as np

from ringrt import _validate
from ringrt._comm import wire
from ringrt._comm.work import Work
from ringrt._deadline import Deadline
from ringrt._observe.observer import P2P_RECV, P2P_SEND
from ringrt._observe.recorder import STATE as POSTED_STATE
from ringrt._process_group import NonMember, ProcessGroup
from ringrt.distributed import resolve
from ringrt.errors import TimeoutError

Group = ProcessGroup | NonMember | None     # None: the default group


def _member_group(group, name):
    pg = resolve(group, name)
    if isinstance(pg, NonMember):
        raise ValueError(f"{name}: this rank is not a member of {pg}")
    return pg


def _check_tag(name: str, tag, global_rank: int) -> int:
    if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= tag < 2**62:
        raise ValueError(f"{name}: tag must be an int in [0, 2**62), got {tag!r} on rank "
                         f"{global_rank}")
    return int(tag)


def _watch(pg, name: str, peers, tag: int):
    """What a point-to-point op runs while it waits: calling it starts the op's deadline and
    returns the check (lost peers among ``peers``, then the deadline)."""
    def start():
        deadline = Deadline(pg.timeout)

        def check():
            lost = pg.lost_members(peers)
            if lost:
                raise pg.lost_error(lost, name, None)
            if deadline.expired():
                raise TimeoutError(f"{name}(tag={tag})", None, sorted(peers), deadline.timeout,
                                   pg.global_rank,
                                   hint="Is the matching send/recv ever called?")
        return check
    return start


def _prepare_send(name: str, array, dst, tag, group):
    pg = _member_group(group, name)
    global_rank = pg.global_rank
    _validate.array(name, array, global_rank)
    _validate.root(name, dst, pg.members, global_rank, "dst")
    tag = _check_tag(name, tag, global_rank)
    if dst == global_rank:
        raise ValueError(f"{name}: rank {global_rank} cannot send to itself")
    lost = pg.lost_members((dst,))
    if lost:
        raise pg.lost_error(lost, name, None)
    return pg, tag


def _recorded(pg, kind: str, peer, tag: int, array: np.ndarray, run):
    """``run()``, kept in the flight recorder (and timeline) as a point-to-point op."""
    observer = pg.observer
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
    watch = _watch(pg, "send", {dst}, tag)
    _recorded(pg, P2P_SEND, dst, tag, array,
              lambda: pg.p2p.send(dst, pg.group_id, tag, array, watch))


def isend(array: np.ndarray, dst: int, tag: int = 0, group: Group = None) -> Work:
    """Start sending ``array`` to ``dst`` (a snapshot is taken, so ``array`` may be reused
    at once). Returns a completed-on-send Work."""
    pg, tag = _prepare_send("isend", array, dst, tag, group)
    _recorded(pg, P2P_SEND, dst, tag, array, lambda: pg.p2p.send(dst, pg.group_id, tag, array))
    return Work.finished(f"isend to {dst} (tag {tag})")


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
    peers, watch = _senders(pg, "recv", src, tag)
    return _recorded(pg, P2P_RECV, src, tag, array,
                     lambda: pg.p2p.recv("recv", array, src, tag, pg.group_id, peers, watch))


def irecv(array: np.ndarray, src: int | None = None, tag: int = 0,
          group: Group = None) -> Work:
    """Start receiving into ``array``; ``Work.result()`` is the sender's global rank.

    On one host the receive completes on the thread that waits for it (or asks
    ``is_completed``), or in the background once a done-callback is added; over sockets it
    runs on the executor, after the ops queued before it.
    """
    pg, tag = _prepare_recv("irecv", array, src, group, tag)
    _posted(pg, array, src, tag)
    peers, watch = _senders(pg, "irecv", src, tag)
    return pg.p2p.irecv("irecv", array, src, tag, pg.group_id, peers, watch)


def _posted(pg, array: np.ndarray, src, tag: int) -> None:
    """An irecv enters the flight recorder as posted (its completion is not tracked there: a
    done-callback would start shared memory's background progress thread)."""
    record = pg.observer.p2p(P2P_RECV, pg.group_id, src, tag,
                             wire.DTYPE_CODES[array.dtype], array.size)
    record[POSTED_STATE] = "posted (irecv)"


def _prepare_recv(name, array, src, group, tag):
    pg = _member_group(group, name)
    global_rank = pg.global_rank
    _validate.array(name, array, global_rank, writable=True)
    if src is not None:
        _validate.root(name, src, pg.members, global_rank, "src")
        if src == global_rank:
            raise ValueError(f"{name}: rank {global_rank} cannot receive from itself")
    return pg, _check_tag(name, tag, global_rank)


def _senders(pg, name: str, src, tag: int):
    """Who a receive may take a message from: the other members in order (``src=None``;
    else None), and the watch over them (or over ``src``)."""
    if src is not None:
        return None, _watch(pg, name, {src}, tag)
    others = [q for q in pg.members if q != pg.global_rank]
    return others, _watch(pg, name, set(others), tag)
