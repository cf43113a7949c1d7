"""Cutting arrays into message-sized segments and near-equal chunks (pure functions).

Large payloads are cut into segments of :func:`segment_bytes` (one huge zmq frame is much
slower than a train of segment-sized ones; the collectives benchmark, ``make bench``, run with
``RINGRT_SEGMENT_BYTES`` set, checks it), so a ring step is pipelined segment by segment.
"""

from __future__ import annotations

# Message-sized segments are the wire's business (point-to-point cuts messages too), so they
# live in _comm; re-exported here for the algorithms.
from ringrt._comm.segments import DEFAULT_SEGMENT_BYTES, segment_bytes, segments

__all__ = ["DEFAULT_SEGMENT_BYTES", "chunk_bounds", "segment_bytes", "segments"]


def chunk_bounds(count: int, parts: int) -> list[tuple[int, int]]:
    """Split ``count`` elements into ``parts`` near-equal contiguous chunks."""
    base, extra = divmod(count, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds
