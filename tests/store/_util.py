"""Helpers shared by the store tests."""

from __future__ import annotations

import time

from ringrt._deadline import Deadline
from ringrt.store._server import StoreServer

TOKEN = "test-token-7c1e"
HOST = "127.0.0.1"


def eventually(condition, timeout: float = 5.0, what: str = "condition"):
    """Polls ``condition()`` until it is truthy and returns it; fails after ``timeout`` s.

    Used for server counters, which change on the server thread with no event to wait on.
    """
    deadline = Deadline(timeout)
    while not deadline.expired():
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_for_growth(server: StoreServer, before: dict, counter: str, by: int = 1) -> dict:
    """Waits until ``server.stats()[counter]`` is ``by`` above ``before``; returns the stats."""
    return eventually(
        lambda: (stats := server.stats())[counter] >= before[counter] + by and stats,
        what=f"stats[{counter!r}] to grow by {by} from {before}",
    )
