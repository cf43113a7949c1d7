"""One monotonic deadline per operation, passed down to every wait (no unbounded waits)."""

from __future__ import annotations

import datetime
import math
import time
from typing import overload


@overload
def seconds(timeout: float | datetime.timedelta) -> float: ...


@overload
def seconds(timeout: None) -> None: ...


def seconds(timeout: float | datetime.timedelta | None) -> float | None:
    """Normalise a timeout given as seconds or ``timedelta`` to float seconds (None = no limit)."""
    if timeout is None:
        return None
    value = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
    if value < 0 or math.isnan(value):
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
    return value


class Deadline:
    """A point in monotonic time by which an operation must finish.

    ``Deadline(None)`` never expires; ``remaining()`` then returns None, which every poll
    in ringrt treats as "no limit".
    """

    __slots__ = ("timeout", "_end")

    def __init__(self, timeout: float | None):
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (>= 0), or None when there is no limit."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def remaining_ms(self, cap_ms: int | None = None) -> int | None:
        """Milliseconds left for zmq polls, optionally capped; None means no limit."""
        left = self.remaining()
        if left is None:
            return cap_ms
        ms = int(math.ceil(left * 1000))
        return ms if cap_ms is None else min(ms, cap_ms)

    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end
