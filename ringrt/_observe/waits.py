"""Seconds this process has spent waiting for peers' messages (the timeline's wait/move split).

Only while tracing, the process group hands :data:`peer_wait` (``Observer.wait_clock``) to the
objects whose calls block on peers (the ``Mailbox`` for sockets, the world's arena for shared
memory), and they add the time those calls block to it. Ops of a process run one at a time
(the executor's lock), so one running total is enough: an op's wait is the difference across
it.
"""

from __future__ import annotations

import time


class WaitClock:
    """A running total of seconds spent blocked on peers."""

    __slots__ = ("total",)

    def __init__(self):
        self.total = 0.0

    def timed(self, call, *args):
        """``call(*args)``, adding the seconds it takes (returning or raising) to the total."""
        start = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.total += time.perf_counter() - start


peer_wait = WaitClock()
