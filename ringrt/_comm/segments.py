"""Cutting a payload into message-sized segments (bounded frame sizes on the wire).

Large payloads are cut into segments of :func:`segment_bytes`, so a ring step is pipelined
segment by segment and a point-to-point message goes as several frames.
"""

from __future__ import annotations

from ringrt._env import env_int

DEFAULT_SEGMENT_BYTES = 512 * 1024


def segment_bytes() -> int:
    """Largest payload of one message (``RINGRT_SEGMENT_BYTES`` overrides)."""
    return max(1024, env_int("RINGRT_SEGMENT_BYTES", DEFAULT_SEGMENT_BYTES))


def segments(start: int, stop: int, itemsize: int):
    """Split element range [start, stop) into message-sized (start, stop) pieces."""
    step = max(1, segment_bytes() // max(1, itemsize))
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]
