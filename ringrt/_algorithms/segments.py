"""Cutting arrays into message-sized segments and near-equal chunks (pure functions).

Large payloads are cut into segments of :func:`segment_bytes` (one huge zmq frame is much
slower than a train of segment-sized ones; the collectives benchmark, ``make bench``, run with
``RINGRT_SEGMENT_BYTES`` set, checks it), so a ring step is pipelined segment by segment.
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


def chunk_bounds(count: int, parts: int) -> list[tuple[int, int]]:
    """Split ``count`` elements into ``parts`` near-equal contiguous chunks."""
    base, extra = divmod(count, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
