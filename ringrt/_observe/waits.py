"""Seconds this process has spent waiting for peers' messages (the timeline's wait/move split).

The socket path adds to :data:`peer_wait` where an op blocks for a message
(``_comm/exchange.py``: ``Mailbox.take``); shared-memory ops are timed around their waiting
calls by the observer while tracing. Ops of a process run one at a time (the executor's lock),
so one running total is enough: an op's wait is the difference across it.
"""

from __future__ import annotations


class WaitClock:
    """A running total of seconds spent blocked on peers."""

    __slots__ = ("total",)

    def __init__(self):
        self.total = 0.0


peer_wait = WaitClock()
