"""The store server's connection accounting: socket-monitor events turned into counters.

:class:`_ConnectionLedger` is pure logic fed by :class:`ringrt.store._server.StoreServer`,
which subscribes its monitor socket to ``_MONITORED``.
"""

from __future__ import annotations

import contextlib
from collections import deque

import zmq

from ringrt.store._protocol import HANDSHAKE_FAILED_EVENTS as _FAILED_EVENTS

_MONITORED = (
    zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | _FAILED_EVENTS
)


class _ConnectionLedger:
    """Counts connections that failed the ZMTP handshake or closed before a complete frame.

    libzmq reports some handshake failures (``EVENT_HANDSHAKE_FAILED_*``) but closes other
    connections without a word: a frame header claiming 2**62 bytes during the handshake, a
    ZMTP/1.0 or random greeting (refused because ZAP_DOMAIN is set), and, after the
    handshake, a frame over MAXMSGSIZE or one cut short. So each connection's fd is tracked
    from ACCEPTED to DISCONNECTED; a frame from it (its SRCFD) proves it completed the
    handshake. Handshake events carry an error code, not the fd, so they are matched to
    connections in accept order: exact when handshakes do not overlap, and a connection is
    never counted twice.
    """

    def __init__(self):
        self._state: dict[int, str] = {}   # fd -> "handshaking" | "ready" | "talked" | "failed"
        self._queue: deque[int] = deque()  # fds awaiting a handshake event, in accept order
        self._early = 0                    # handshakes proven by a frame before their event
        self.open = self.total = 0
        self.handshake_failures = 0        # closed before the ZMTP handshake completed
        self.incomplete = 0                # handshake done, closed before any complete frame

    def on_event(self, event: int, fd: int) -> None:
        """Updates the counters from one socket-monitor event (``fd`` is its value)."""
        if event == zmq.EVENT_ACCEPTED:
            self._accepted(fd)
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._settle("ready")
        elif event & _FAILED_EVENTS:
            self._settle("failed")
            self.handshake_failures += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self._closed(fd)

    def on_frame(self, fd: int) -> None:
        """Notes that a complete frame arrived on ``fd``."""
        if self._state.get(fd, "handshaking") == "handshaking":
            self._early += 1
            with contextlib.suppress(ValueError):
                self._queue.remove(fd)
        self._state[fd] = "talked"

    def _accepted(self, fd: int) -> None:
        self.open += 1
        self.total += 1
        if self._state.get(fd) != "talked":   # not already heard from (frames read first)
            self._state[fd] = "handshaking"
            self._queue.append(fd)

    def _settle(self, outcome: str) -> None:
        if outcome == "ready" and self._early:
            self._early -= 1
            return
        while self._queue:
            fd = self._queue.popleft()
            if self._state.get(fd) == "handshaking":
                self._state[fd] = outcome
                return

    def _closed(self, fd: int) -> None:
        self.open = max(0, self.open - 1)
        state = self._state.pop(fd, None)
        if state == "handshaking":
            self.handshake_failures += 1
            with contextlib.suppress(ValueError):
                self._queue.remove(fd)
        elif state == "ready":
            self.incomplete += 1
