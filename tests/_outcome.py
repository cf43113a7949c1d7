"""What a call did, as JSON a rank can hand back to its test (tests/world.py reads it)."""

from __future__ import annotations

import time


def outcome(fn) -> list:
    """Run ``fn()``; return ``[exception class name or "ok", message, seconds taken]``."""
    start = time.monotonic()
    try:
        fn()
        return ["ok", "", time.monotonic() - start]
    except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
        return [type(exc).__name__, str(exc), time.monotonic() - start]
