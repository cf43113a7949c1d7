"""The inside-a-host halves of the two-level all_reduce, over a host's shared-memory arena.

A host's ranks split the array into *shares*, ``chunk_bounds(count, ranks on the host)``:
local index i owns share i. :func:`reduce_scatter_shares` leaves each rank with its share
reduced over the host (in local-index order: the same bits every run); the cross-host step
then all-reduces each share among the ranks with the same local index, and
:func:`all_gather_shares` puts the shares back together on every rank.

Both go piece by piece as ``shm.py`` does: piece k holds the k-th slice of every share, so
every rank has the same amount of reducing to do in every piece; one phase a piece, and the
pieces rotate through two regions of the slot (a rank writes region k % 2 again only at piece
k + 2, after every peer signalled piece k + 1, i.e. finished reading piece k).
"""

from __future__ import annotations

import numpy as np

from ringrt._algorithms.segments import chunk_bounds
from ringrt._algorithms.shm import _pieces, _sum_slots, fit


def reduce_scatter_shares(op, flat: np.ndarray, combine) -> np.ndarray:
    """This rank's share of ``flat`` reduced over the host's ranks (a new array).

    Call after ``op.acquire()``; ends with the peers possibly still reading our slot (call
    ``op.phase()`` before writing it again)."""
    dtype = flat.dtype
    bounds = chunk_bounds(flat.size, op.size)
    a, b = bounds[op.rank]
    share = np.empty(b - a, dtype)
    longest = bounds[0][1] - bounds[0][0]
    fit(op, longest * flat.itemsize * op.size)
    for start, stop, region in _pieces(op, longest, flat.itemsize, blocks=op.size):
        width = stop - start
        for q, (qa, qb) in enumerate(bounds):
            lo, hi = qa + start, min(qa + stop, qb)
            if hi > lo:
                op.slot(op.rank, dtype, hi - lo, q * width, region)[...] = flat[lo:hi]
        op.phase()
        hi = min(stop, b - a)
        if hi > start:                               # local-index order: the same bits
            _sum_slots(op, share[start:hi], hi - start, op.rank * width, combine, region)
    return share


def all_gather_shares(op, flat: np.ndarray, share: np.ndarray) -> None:
    """``flat`` receives every rank's share (this rank's from ``share``); releases the op.

    Call after a phase that follows :func:`reduce_scatter_shares` (nobody reads our slot)."""
    dtype = flat.dtype
    fit(op, flat.nbytes)
    bounds = chunk_bounds(flat.size, op.size)
    longest = bounds[0][1] - bounds[0][0]
    for start, stop, region in _pieces(op, longest, flat.itemsize):
        hi = min(stop, share.size)
        if hi > start:
            op.slot(op.rank, dtype, hi - start, 0, region)[...] = share[start:hi]
        op.phase()
        for q, (qa, qb) in enumerate(bounds):
            lo, top = qa + start, min(qa + stop, qb)
            if top <= lo:
                continue
            flat[lo:top] = share[start:start + top - lo] if q == op.rank else \
                op.slot(q, dtype, top - lo, 0, region)
    op.release()
