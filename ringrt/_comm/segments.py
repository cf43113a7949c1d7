"""Cutting a payload into message-sized segments (bounded frame sizes on the wire).

Large payloads are cut into segments of :func:`segment_bytes`, so a ring step is pipelined
segment by segment and a point-to-point message goes as several frames.
"""

from __future__ import annotations

from ringrt._settings import read_setting

DEFAULT_SEGMENT_BYTES = read_setting("RINGRT_SEGMENT_BYTES", {})     # the registry's default


def segment_bytes() -> int:
    """Largest payload of one message (``RINGRT_SEGMENT_BYTES`` overrides; read per call, as
    the algorithms that cut messages are handed no settings)."""
    return max(1024, read_setting("RINGRT_SEGMENT_BYTES"))


def segments(start: int, stop: int, itemsize: int):
    """Split element range [start, stop) into message-sized (start, stop) pieces."""
    step = max(1, segment_bytes() // max(1, itemsize))
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]
