"""Seconds this process has spent waiting for peers' messages (the timeline's wait/move split).

Only while tracing, the observer wraps the waiting calls of this world's instances
(``Mailbox.take`` / ``take_any`` for sockets, ``HostArena.wait`` for shared memory) so that
they add the time they block to :data:`peer_wait` (``Observer.time_waits``). Ops of a process run one at a time (the executor's lock),
so one running total is enough: an op's wait is the difference across it.
"""

from __future__ import annotations


class WaitClock:
    """A running total of seconds spent blocked on peers."""

    __slots__ = ("total",)

    def __init__(self):
        self.total = 0.0


peer_wait = WaitClock()
