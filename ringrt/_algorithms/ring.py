"""Ring algorithms: pipelined reduce-scatter and all-gather (and all_reduce = both).

They work on ``chunks``, a list of one 1-D array view per rank (chunk j is the part rank j
ends up owning), so all_reduce (views of one buffer), all_gather into a list, and the
``*_tensor`` ops share one implementation without extra copies.

Rank r sends to r+1 and receives from r-1. Each chunk is cut into segments and a segment is
forwarded as soon as it has been reduced (or received), so the ring is a pipeline rather than
n-1 lock-step rounds. Zero-copy safety: a buffer sent is never written again in the op, or is
written only after a message that causally depends on the send having arrived; the op's
trackers cover the rest before it returns (see Exchange.finish).
"""

from __future__ import annotations

import numpy as np

from ringrt._algorithms.segments import chunk_bounds, segments


def reduce_scatter_ring(ex, chunks: list[np.ndarray], combine) -> None:
    """Reduce in place so that rank r's ``chunks[r]`` holds the reduction over all ranks
    (the other chunks are left with partial results)."""
    n, r = ex.size, ex.rank
    if n == 1:
        return
    right, left = (r + 1) % n, (r - 1) % n
    first = chunks[(r - 1) % n]
    for a, b in segments(0, first.size, first.itemsize):
        ex.send(right, first[a:b])
    for step in range(n - 1):
        chunk = chunks[(r - step - 2) % n]
        for a, b in segments(0, chunk.size, chunk.itemsize):
            incoming = ex.as_array(ex.recv(left), chunk.dtype, b - a, left)
            combine(chunk[a:b], incoming)
            if step < n - 2:
                ex.send(right, chunk[a:b])


def all_gather_ring(ex, chunks: list[np.ndarray]) -> None:
    """Rank r holds ``chunks[r]``; afterwards every rank holds every chunk."""
    n, r = ex.size, ex.rank
    if n == 1:
        return
    right, left = (r + 1) % n, (r - 1) % n
    mine = chunks[r]
    for a, b in segments(0, mine.size, mine.itemsize):
        ex.send(right, mine[a:b])
    for step in range(n - 1):
        chunk = chunks[(r - step - 1) % n]
        for a, b in segments(0, chunk.size, chunk.itemsize):
            buffer = ex.recv(left)
            chunk[a:b] = ex.as_array(buffer, chunk.dtype, b - a, left)
            if step < n - 2:
                ex.send(right, buffer)          # forward the received frame, zero-copy


def split(flat: np.ndarray, parts: int) -> list[np.ndarray]:
    """Views of ``flat`` cut into ``parts`` near-equal chunks."""
    return [flat[a:b] for a, b in chunk_bounds(flat.size, parts)]


def all_reduce_ring(ex, flat: np.ndarray, combine) -> None:
    """In-place all-reduce of a 1-D array: reduce-scatter, then all-gather."""
    chunks = split(flat, ex.size)
    reduce_scatter_ring(ex, chunks, combine)
    all_gather_ring(ex, chunks)


def reduce_ring(ex, flat: np.ndarray, combine, root: int) -> None:
    """Reduce to ``root`` for large arrays: ring reduce-scatter, then chunks go to the root.
    ``flat`` is overwritten on every rank (callers pass a scratch copy on non-roots)."""
    chunks = split(flat, ex.size)
    reduce_scatter_ring(ex, chunks, combine)
    r = ex.rank
    if r != root:
        mine = chunks[r]
        for a, b in segments(0, mine.size, mine.itemsize):
            ex.send(root, mine[a:b])
        return
    for peer in range(ex.size):
        if peer == root:
            continue
        chunk = chunks[peer]
        for a, b in segments(0, chunk.size, chunk.itemsize):
            chunk[a:b] = ex.as_array(ex.recv(peer), chunk.dtype, b - a, peer)
