"""Same-host algorithms over shared memory (see ``ringrt._shm``).

Each works piece by piece (a piece fills the staging slots): every rank copies its piece into
its own slot, a phase makes them visible, then every rank reads what it needs straight from
the peers' slots. Reductions add the slots in rank order, so the same inputs always give the
same bits; a rank either reduces the whole piece (small pieces: one phase) or only its own
chunk, which the others then copy (large pieces: two phases, each byte reduced once).
"""

from __future__ import annotations

import numpy as np

from ringrt._algorithms import chunk_bounds

# While piece bytes x world size stay below this, every rank reduces the whole piece itself:
# saving a phase (a futex round, 10-80 us on 2 busy cores) beats reducing n-fold. Measured at
# world 2, 1 MiB: 285 us whole vs 488 us chunked (stage timers, loaded machine, 2026-11-23).
WHOLE_PIECE_TRAFFIC = 4 << 20


def _pieces(total: int, capacity: int):
    if total == 0:
        return [(0, 0)]
    return [(a, min(a + capacity, total)) for a in range(0, total, capacity)]


def _sum_slots(op, out: np.ndarray, count: int, offset: int, combine, byte_offset=0) -> None:
    """out = slot 0 (op) slot 1 (op) ... in rank order (the first step writes ``out``
    directly: one pass over memory less than copying slot 0 first)."""
    def slot(q):
        return op.slot(q, out.dtype, count, offset, byte_offset)

    combine(slot(0), slot(1), out)
    for q in range(2, op.size):
        combine(out, slot(q))


def all_reduce_shm(op, flat: np.ndarray, combine) -> None:
    """In-place all-reduce of a 1-D array through the staging slots."""
    dtype = flat.dtype
    if flat.nbytes * 2 <= op.arena.slot_bytes and flat.nbytes * op.size <= WHOLE_PIECE_TRAFFIC:
        _all_reduce_small(op, flat, combine)
        return
    for start, stop in _pieces(flat.size, op.capacity(dtype)):
        count = stop - start
        bounds = chunk_bounds(count, op.size)
        a, b = bounds[op.rank]
        op.acquire()
        staged = op.slot(op.rank, dtype, count)
        staged[:a] = flat[start:start + a]               # peers reduce these chunks; ours is
        staged[b:] = flat[start + b:stop]                # reduced straight from our array
        op.phase()
        mine = flat[start + a:start + b]
        for q in op.peers:                               # fixed order: the same bits every run
            combine(mine, op.slot(q, dtype, b - a, a))
        staged[a:b] = mine
        op.phase()
        for q in op.peers:
            qa, qb = bounds[q]
            flat[start + qa:start + qb] = op.slot(q, dtype, qb - qa, qa)
        op.release()


def _all_reduce_small(op, flat: np.ndarray, combine) -> None:
    """One phase: stage into this op's half slot, then every rank sums all the halves."""
    half = op.half()
    op.acquire_half()
    op.slot(op.rank, flat.dtype, flat.size, 0, half)[...] = flat
    op.phase()
    _sum_slots(op, flat, flat.size, 0, combine, half)
    op.half_done()
    op.release()


def broadcast_shm(op, flat: np.ndarray, root: int) -> None:
    """Copy root's array into every rank's through root's slot."""
    dtype = flat.dtype
    for start, stop in _pieces(flat.size, op.capacity(dtype)):
        op.acquire()
        if op.rank == root:
            op.slot(root, dtype, stop - start)[...] = flat[start:stop]
        op.phase()
        if op.rank != root:
            flat[start:stop] = op.slot(root, dtype, stop - start)
        op.release()


def all_gather_shm(op, outputs: list[np.ndarray], mine: np.ndarray) -> None:
    """``outputs[q]`` receives rank q's ``mine``."""
    dtype = mine.dtype
    for start, stop in _pieces(mine.size, op.capacity(dtype)):
        op.acquire()
        op.slot(op.rank, dtype, stop - start)[...] = mine[start:stop]
        op.phase()
        for q in range(op.size):
            outputs[q][start:stop] = op.slot(q, dtype, stop - start) if q != op.rank \
                else mine[start:stop]
        op.release()


def reduce_scatter_shm(op, inputs: list[np.ndarray], output: np.ndarray, combine) -> None:
    """``output`` = reduction over ranks (in rank order) of their ``inputs[this rank]``."""
    dtype = output.dtype
    capacity = op.capacity(dtype, blocks=op.size)
    for start, stop in _pieces(output.size, capacity):
        count = stop - start
        op.acquire()
        for j in range(op.size):
            op.slot(op.rank, dtype, count, j * count)[...] = inputs[j][start:stop]
        op.phase()
        _sum_slots(op, output[start:stop], count, op.rank * count, combine)
        op.release()


def barrier_shm(op) -> None:
    """Every rank waits for every other: one phase."""
    op.acquire()
    op.phase()
    op.release()
