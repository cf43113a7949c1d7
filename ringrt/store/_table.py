"""The store server's key table: keys, values and parked get/wait requests (no sockets).

:class:`_Table` is pure logic; its replies go to ``outbox``, which
:class:`ringrt.store._server.StoreServer` sends. The wire format is in ``_protocol``.
"""

from __future__ import annotations

import heapq
import itertools
import re
from dataclasses import dataclass

from ringrt.store import _protocol as proto

_MAX_WAITERS = 1 << 16         # parked get/wait requests; more are refused, not queued
# At most 64 digits: int() refuses more than 4300 with a ValueError (which reached the server's
# catch-all), and anything past 19 overflows int64 anyway (refused below).
_INTEGER = re.compile(rb"-?[0-9]{1,64}")

Reply = tuple[bytes, bytes]    # (ZMQ identity, encoded frame)


class _BadRequest(Exception):
    """A well-formed request the table cannot serve; the text goes back to the client."""


@dataclass(eq=False)
class _Waiter:
    """A parked get (``value_key`` set) or wait (``value_key`` None)."""

    identity: bytes
    request_id: int
    value_key: str | None
    missing: set[str]
    expires_at: float
    ticket: int
    parked: bool = False
    done: bool = False


class _Table:
    """Keys, values and parked get/wait requests. Pure logic: replies go to ``outbox``."""

    def __init__(self, max_waiters: int = _MAX_WAITERS):
        self.values: dict[str, bytes] = {}
        self.outbox: list[Reply] = []
        self._max_waiters = max_waiters
        self._waiting: dict[str, dict[int, _Waiter]] = {}   # key -> ticket -> waiter
        self._expiry: list[tuple[float, int, _Waiter]] = []  # heap, with lazy deletion
        self._live = 0
        self._tickets = itertools.count()

    @property
    def waiters(self) -> int:
        """Parked requests not yet answered."""
        return self._live

    def put(self, key: str, value: bytes) -> None:
        """Stores ``value`` and answers every request parked on ``key``."""
        self.values[key] = value
        for waiter in self._waiting.pop(key, {}).values():
            waiter.missing.discard(key)
            if not waiter.missing:
                self._answer(waiter, proto.OK, self._result(waiter))

    def add(self, key: str, amount: int) -> int:
        """torch ``add``: a missing key counts from 0; values are decimal ASCII."""
        current = self.values.get(key, b"0")
        if not _INTEGER.fullmatch(current):
            raise _BadRequest(f"add({key!r}): the stored value {current[:40]!r} is not an integer")
        total = int(current) + amount
        if not proto.INT64_MIN <= total <= proto.INT64_MAX:
            raise _BadRequest(f"add({key!r}): {int(current)} + {amount} overflows int64")
        self.put(key, str(total).encode())
        return total

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        """torch TCPStore ``compare_set``, including its missing-key cases."""
        if key not in self.values:
            if expected:
                return expected   # torch returns `expected` without storing anything
            self.put(key, desired)
            return desired
        if self.values[key] == expected:
            self.put(key, desired)
        return self.values[key]

    def park(self, identity: bytes, request_id: int, keys: list[str], value_key: str | None,
             timeout: float, now: float) -> None:
        """Answers at once when every key exists, else parks the request until set or expiry."""
        missing = {key for key in keys if key not in self.values}
        waiter = _Waiter(identity, request_id, value_key, missing, now + timeout,
                         next(self._tickets))
        if not missing:
            return self._answer(waiter, proto.OK, self._result(waiter))
        if timeout <= 0:
            return self._answer(waiter, proto.TIMEOUT, sorted(missing))
        if self._live >= self._max_waiters:
            raise _BadRequest(f"the server already holds {self._live} waiting requests")
        for key in missing:
            self._waiting.setdefault(key, {})[waiter.ticket] = waiter
        heapq.heappush(self._expiry, (waiter.expires_at, waiter.ticket, waiter))
        waiter.parked = True
        self._live += 1

    def expire(self, now: float) -> None:
        """Answers "timeout" to every parked request whose time is up."""
        while self._expiry and self._expiry[0][0] <= now:
            waiter = heapq.heappop(self._expiry)[2]
            if waiter.done:
                continue
            for key in waiter.missing:
                self._waiting.get(key, {}).pop(waiter.ticket, None)
                if not self._waiting.get(key, True):
                    del self._waiting[key]
            self._answer(waiter, proto.TIMEOUT, sorted(waiter.missing))

    def next_expiry(self) -> float | None:
        """Monotonic time of the earliest parked request's expiry (None when none)."""
        self._compact()
        return self._expiry[0][0] if self._expiry else None

    def _compact(self) -> None:
        # Answered waiters stay in the heap until their expiry; drop them once they dominate.
        if len(self._expiry) > 2 * self._live + 1024:
            self._expiry = [entry for entry in self._expiry if not entry[2].done]
            heapq.heapify(self._expiry)

    def _result(self, waiter: _Waiter) -> bytes | None:
        return None if waiter.value_key is None else self.values[waiter.value_key]

    def _answer(self, waiter: _Waiter, status: str, payload) -> None:
        if waiter.done:
            return
        waiter.done = True
        if waiter.parked:
            self._live -= 1
        self.outbox.append((waiter.identity, proto.encode(waiter.request_id, status, payload)))
