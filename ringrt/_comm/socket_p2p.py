"""Point-to-point over the sockets: the path when the ranks do not share one host's memory.

Messages go through the transport like the collectives' (ipc on one host, tcp across hosts),
as ``P2P`` frames keyed by (group_id, tag, sender) in the mailbox; a large message is cut into
segments, each a frame of its own. A receive is a job of the executor, so it runs after the
ops queued before it. :class:`SocketPointToPoint` has the methods of
:class:`~ringrt._comm.shm_p2p.ShmPointToPoint`, so ``ringrt/p2p.py`` drives either alike.

``watch`` arguments are zero-argument callables that start an op's deadline and return its
``check()``, which raises when the op cannot complete (a lost peer, the deadline); a receive
starts it when its job starts running.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from ringrt._comm import wire
from ringrt._comm.exchange import HEADER_BYTES, INLINE_MAX_BYTES, POLL_SLICE_MS
from ringrt._comm.segments import segments
from ringrt._comm.shm_p2p import mismatch
from ringrt._comm.work import Work

_SEND = wire.OP_CODES["send"]


class SocketPointToPoint:
    """This rank's point-to-point messages through ``transport`` and ``mailbox``.

    Args:
        transport: the world's :class:`~ringrt._comm.transport.Transport`.
        mailbox: this rank's :class:`~ringrt._comm.exchange.Mailbox`.
        executor: the :class:`~ringrt._comm.work.Executor` that runs receives.
        counters: this rank's :class:`~ringrt._comm.counters.OpCounters`.
        rank: this rank's global rank (the sender of what it sends).
    """

    def __init__(self, transport, mailbox, executor, counters, rank: int):
        self.rank = rank
        self._transport, self._mailbox = transport, mailbox
        self._executor, self._counters = executor, counters

    # -- sending --------------------------------------------------------------------------

    def send(self, dst: int, group_id: int, tag: int, array: np.ndarray, watch=None) -> None:
        """Send ``array`` to ``dst``. Without ``watch``, a snapshot is sent and the call
        returns at once (``isend``); with it, the array itself is sent and the call returns
        once zmq released it, running the check while it waits (``send``)."""
        check = None if watch is None else watch()
        for tracker in self._send_now(dst, group_id, tag, array, copy=check is None):
            while not tracker.done:
                check()
                try:
                    tracker.wait(POLL_SLICE_MS / 1000)
                except zmq.NotDone:
                    pass

    def _send_now(self, dst: int, group_id: int, tag: int, array: np.ndarray, copy: bool) -> list:
        """Hand every segment of ``array`` to the transport; returns the trackers of those
        sent zero-copy."""
        self._counters.record("send", array.nbytes, 0.0)
        flat = array.reshape(-1).view(np.uint8)
        dtype = wire.DTYPE_CODES[array.dtype]
        pieces = segments(0, flat.size, 1) or [(0, 0)]
        trackers = []
        for index, (a, b) in enumerate(pieces):
            piece = flat[a:b]
            if piece.nbytes <= INLINE_MAX_BYTES:
                header = wire.pack(wire.P2P, _SEND, dtype, 0, wire.INLINE, group_id, self.rank,
                                   tag, array.size, -1, index)
                self._transport.send(dst, b"".join((header, piece.data)))
                continue
            header = wire.pack(wire.P2P, _SEND, dtype, 0, 0, group_id, self.rank, tag,
                               array.size, -1, index)
            trackers.append(self._transport.send(dst, header, piece.copy() if copy else piece,
                                                 track=not copy))
        return [t for t in trackers if t is not None]

    # -- receiving ------------------------------------------------------------------------

    def recv(self, name: str, array: np.ndarray, src, tag: int, group_id: int, peers,
             watch) -> int:
        """Receive into ``array`` from ``src`` (None: any sender); returns the sender.
        ``peers`` (the members ``src=None`` may take from) matter only to ``watch``."""
        return self._executor.run(self._job(array, src, tag, group_id, watch), name)

    def irecv(self, name: str, array: np.ndarray, src, tag: int, group_id: int, peers,
              watch) -> Work:
        """Start :meth:`recv` on the executor; the Work's result is the sender."""
        return self._executor.submit(self._job(array, src, tag, group_id, watch), name)

    def _job(self, array: np.ndarray, src, tag: int, group_id: int, watch):
        def job():
            check = watch()
            start = time.perf_counter()
            sender = self._receive(array, src, tag, group_id, check)
            self._counters.record("recv", array.nbytes, time.perf_counter() - start)
            return sender
        return job

    def _receive(self, array: np.ndarray, src, tag: int, group_id: int, check) -> int:
        mailbox = self._mailbox
        if src is None:
            header, first, payload = mailbox.take_any(group_id, tag, check)
        else:
            header, first, payload = mailbox.take((wire.P2P, group_id, tag, src), check)
        sender = header.src
        key = (wire.P2P, group_id, tag, sender)
        pieces = segments(0, max(header.count, 0) * _itemsize(header.dtype), 1) or [(0, 0)]
        flat = array.reshape(-1).view(np.uint8)
        problem = mismatch(sender, header.dtype, header.count, array, tag, self.rank)
        for index, (a, b) in enumerate(pieces):
            if index:
                header, first, payload = mailbox.take(key, check)
            if problem is None:
                data = first.buffer[HEADER_BYTES:] if header.flags & wire.INLINE else payload
                flat[a:b] = np.frombuffer(data, np.uint8)
        if problem is not None:
            raise problem
        return sender

    # -- the rest of the interface ----------------------------------------------------------

    def close(self) -> None:
        """Nothing of its own to release: the transport and mailbox are the world's."""

    def stats(self) -> dict:
        """``ringrt.stats()["p2p"]``."""
        return {"path": "sockets"}


def _itemsize(dtype_code: int) -> int:
    dtype = wire.CODE_DTYPES.get(dtype_code)
    return 1 if dtype is None else dtype.itemsize
