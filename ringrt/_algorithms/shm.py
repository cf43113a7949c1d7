"""Same-host algorithms over shared memory (see ``ringrt._comm.shm``).

Large ops go piece by piece: every rank copies a piece into a region of its own slot, a phase
makes it visible, then every rank reads what it needs straight from the peers' slots.
Reductions add the slots in rank order, so the same inputs always give the same bits; each
rank reduces only its own chunk of a piece, which the others then copy (two phases a piece,
each byte reduced once). Small ops take one phase in a half slot (see ``_all_reduce_small``).

Pieces are cache-sized (``PIECE_BYTES``) and rotate through regions of the slot: a peer can be
at most one piece ahead (it waits for our phase), so with two or more regions nobody writes a
region another rank still reads, and only the op's first piece waits for the previous op's
readers (``acquire``); the op releases once at its end.
"""

from __future__ import annotations

import numpy as np

from ringrt._algorithms.segments import chunk_bounds
from ringrt._comm.shm import half_slot

# While array bytes x world size stay below this, every rank reduces the whole array itself:
# saving a phase (a futex round trip, dear on busy cores) beats reducing n-fold. The
# collectives benchmark (make bench) at 1 MiB checks it; figures in docs/performance-notes.md.
WHOLE_PIECE_TRAFFIC = 4 << 20
# Staged bytes per piece: small enough to stay in cache between staging, reducing and copying
# out: a 64 MiB all_reduce got faster with each halving of the piece down to this size (the
# collectives benchmark, make bench, at 64 MiB; figures in docs/performance-notes.md).
PIECE_BYTES = 1 << 20
MAX_PIECES = 500                 # two steps a piece; an op has at most tickets.MAX_STEPS


def slot_bytes_for(staged: int, whole: bool = False) -> int:
    """Slot bytes an op staging ``staged`` bytes per rank needs for :func:`_pieces` to cut it
    as in any larger slot (two regions of a piece), or with ``whole`` for a small reduction
    to fit its array in a half slot. A group arena grows to this on use (``op.fit``)."""
    piece = staged if whole else min(staged, max(PIECE_BYTES, -(-staged // MAX_PIECES)))
    return 2 * (-(-piece // 64) * 64) + 128


def fit(op, staged: int, whole: bool = False) -> None:
    """Grow a group arena's slots for an op staging ``staged`` bytes per rank (see
    :func:`slot_bytes_for`); the world arena's are sized up front (nothing to do)."""
    arena = op.arena
    # slot_bytes_for(staged) <= 2 * staged + 254: below that nothing to compute (small ops)
    if arena.growable and 2 * staged + 256 > arena.slot_bytes:
        op.fit(slot_bytes_for(staged, whole))


def _pieces(op, count: int, itemsize: int, blocks: int = 1):
    """Yield ``(start, stop, byte_offset)``: element ranges of one block and the slot region
    their ``blocks`` blocks are staged in."""
    if count == 0:
        yield 0, 0, 0
        return
    half = half_slot(op.arena.slot_bytes)                # two regions always fit the slot
    staged = max(PIECE_BYTES, -(-count * itemsize * blocks // MAX_PIECES))
    elements = max(1, min(staged, half) // (itemsize * blocks))
    region_bytes = -(-elements * itemsize * blocks // 64) * 64      # <= half
    regions = 2          # double-buffered: a small working set, as the measurements above want
    for index, start in enumerate(range(0, count, elements)):
        yield start, min(start + elements, count), (index % regions) * region_bytes


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
    _reduce_through_slots(op, flat, combine, root=None)


def reduce_shm(op, flat: np.ndarray, combine, root: int) -> None:
    """``root``'s array becomes the reduction; the others' arrays are only read.

    The steps of :func:`all_reduce_shm`, so the bits equal an all-reduce's, except that a
    rank other than ``root`` reduces its chunk into its slot instead of its array, and only
    ``root`` copies the reduced chunks out.
    """
    _reduce_through_slots(op, flat, combine, root)


def _reduce_through_slots(op, flat: np.ndarray, combine, root: int | None) -> None:
    """The reduction every rank (``root`` None) or only ``root`` ends with in ``flat``."""
    dtype = flat.dtype
    keeps = root is None or op.rank == root          # this rank's array gets the result
    fit(op, flat.nbytes, whole=flat.nbytes * op.size <= WHOLE_PIECE_TRAFFIC)
    if flat.nbytes * 2 <= op.arena.slot_bytes and flat.nbytes * op.size <= WHOLE_PIECE_TRAFFIC:
        _reduce_small(op, flat, combine, keeps)
        return
    op.acquire()
    for start, stop, region in _pieces(op, flat.size, flat.itemsize):
        count = stop - start
        bounds = chunk_bounds(count, op.size)
        a, b = bounds[op.rank]
        staged = op.slot(op.rank, dtype, count, 0, region)
        staged[:a] = flat[start:start + a]               # peers reduce these chunks; ours is
        staged[b:] = flat[start + b:stop]                # reduced straight from our array
        op.phase()
        if keeps:
            mine = flat[start + a:start + b]
        else:                                            # the array is only read: the slot
            mine = staged[a:b]
            mine[...] = flat[start + a:start + b]
        for q in op.peers:                               # fixed order: the same bits every run
            combine(mine, op.slot(q, dtype, b - a, a, region))
        if keeps:
            staged[a:b] = mine
        op.phase()
        if keeps:
            for q in op.peers:
                qa, qb = bounds[q]
                flat[start + qa:start + qb] = op.slot(q, dtype, qb - qa, qa, region)
    op.release()


def _reduce_small(op, flat: np.ndarray, combine, keeps: bool) -> None:
    """One phase: stage into this op's half slot, then the ranks that keep the result sum
    all the halves."""
    half = op.half()
    op.acquire_half()
    op.slot(op.rank, flat.dtype, flat.size, 0, half)[...] = flat
    op.phase()
    if keeps:
        _sum_slots(op, flat, flat.size, 0, combine, half)
    op.half_done()
    op.release()


def gather_shm(op, outputs: list[np.ndarray] | None, mine: np.ndarray, root: int) -> None:
    """``root``'s ``outputs[q]`` receives rank q's ``mine`` (only ``root`` reads slots)."""
    dtype = mine.dtype
    fit(op, mine.nbytes)
    op.acquire()
    for start, stop, region in _pieces(op, mine.size, mine.itemsize):
        if op.rank != root:
            op.slot(op.rank, dtype, stop - start, 0, region)[...] = mine[start:stop]
        op.phase()
        if op.rank == root:
            for q in range(op.size):
                outputs[q][start:stop] = op.slot(q, dtype, stop - start, 0, region) \
                    if q != root else mine[start:stop]
    op.release()


def scatter_shm(op, inputs: list[np.ndarray] | None, output: np.ndarray, root: int) -> None:
    """Rank j's ``output`` receives ``root``'s ``inputs[j]``, staged in ``root``'s slot."""
    dtype = output.dtype
    fit(op, output.nbytes * op.size)
    op.acquire()
    for start, stop, region in _pieces(op, output.size, output.itemsize, blocks=op.size):
        count = stop - start
        if op.rank == root:
            for j in op.peers:
                op.slot(root, dtype, count, j * count, region)[...] = inputs[j][start:stop]
        op.phase()
        output[start:stop] = inputs[root][start:stop] if op.rank == root else \
            op.slot(root, dtype, count, op.rank * count, region)
    op.release()


def all_to_all_shm(op, outputs: list[np.ndarray], inputs: list[np.ndarray]) -> None:
    """``outputs[q]`` receives rank q's ``inputs[this rank]``; every block the same size
    (uneven blocks: :func:`all_to_all_uneven_shm`)."""
    dtype = outputs[0].dtype
    fit(op, outputs[0].nbytes * op.size)
    op.acquire()
    for start, stop, region in _pieces(op, outputs[0].size, outputs[0].itemsize,
                                       blocks=op.size):
        count = stop - start
        for j in op.peers:
            op.slot(op.rank, dtype, count, j * count, region)[...] = inputs[j][start:stop]
        op.phase()
        for q in range(op.size):
            outputs[q][start:stop] = inputs[q][start:stop] if q == op.rank else \
                op.slot(q, dtype, count, op.rank * count, region)
    op.release()


def broadcast_shm(op, flat: np.ndarray, root: int) -> None:
    """Copy root's array into every rank's through root's slot."""
    dtype = flat.dtype
    fit(op, flat.nbytes)
    op.acquire()
    for start, stop, region in _pieces(op, flat.size, flat.itemsize):
        if op.rank == root:
            op.slot(root, dtype, stop - start, 0, region)[...] = flat[start:stop]
        op.phase()
        if op.rank != root:
            flat[start:stop] = op.slot(root, dtype, stop - start, 0, region)
    op.release()


def all_gather_shm(op, outputs: list[np.ndarray], mine: np.ndarray) -> None:
    """``outputs[q]`` receives rank q's ``mine``."""
    fit(op, mine.nbytes)
    op.acquire()
    all_gather_blocks(op, outputs, mine)
    op.release()


def all_gather_blocks(op, outputs: list[np.ndarray], mine: np.ndarray) -> None:
    """``outputs[q]`` receives rank q's ``mine``; the blocks may differ in size (``outputs[q]``
    is rank q's size), so uneven shares (:func:`blocks_of`) go as equal ones do.

    The steps between ``fit`` (the longest block) with ``acquire`` and ``release``: piece k
    holds the k-th slice of every block, one phase a piece."""
    dtype = mine.dtype
    longest = max(block.size for block in outputs)
    for start, stop, region in _pieces(op, longest, mine.itemsize):
        hi = min(stop, mine.size)
        if hi > start:
            op.slot(op.rank, dtype, hi - start, 0, region)[...] = mine[start:hi]
        op.phase()
        for q, block in enumerate(outputs):
            hi = min(stop, block.size)
            if hi > start:
                block[start:hi] = mine[start:hi] if q == op.rank else \
                    op.slot(q, dtype, hi - start, 0, region)


def reduce_scatter_shm(op, inputs: list[np.ndarray], output: np.ndarray, combine) -> None:
    """``output`` = reduction over ranks (in rank order) of their ``inputs[this rank]``."""
    fit(op, output.nbytes * op.size)
    op.acquire()
    reduce_scatter_blocks(op, inputs, output, combine)
    op.release()


def reduce_scatter_blocks(op, inputs: list[np.ndarray], output: np.ndarray, combine) -> None:
    """``output`` = reduction over ranks (in rank order: the same bits every run) of their
    ``inputs[this rank]``; the blocks may differ in size (``inputs[q]`` is as long as rank
    q's ``output``), so uneven shares (:func:`blocks_of`) go as equal ones do.

    The steps between ``fit`` (the longest block times the ranks) with ``acquire`` and
    ``release``: piece k holds the k-th slice of every block, so every rank has the same
    reducing to do in every piece; one phase a piece. Ends with the peers possibly still
    reading our slot (a phase before writing it again)."""
    dtype = output.dtype
    longest = max(block.size for block in inputs)
    for start, stop, region in _pieces(op, longest, output.itemsize, blocks=op.size):
        width = stop - start
        for q, block in enumerate(inputs):
            hi = min(stop, block.size)
            if hi > start:
                op.slot(op.rank, dtype, hi - start, q * width, region)[...] = block[start:hi]
        op.phase()
        hi = min(stop, output.size)
        if hi > start:
            _sum_slots(op, output[start:hi], hi - start, op.rank * width, combine, region)


def blocks_of(flat: np.ndarray, bounds: list[tuple[int, int]]) -> list[np.ndarray]:
    """Views of ``flat``'s blocks ``[a, b)`` (e.g. ``chunk_bounds``' shares, largest first)."""
    return [flat[a:b] for a, b in bounds]


def barrier_shm(op) -> None:
    """Every rank waits for every other: one phase."""
    op.acquire()
    op.phase()
    op.release()


def all_to_all_uneven_shm(op, outputs: list[np.ndarray], inputs: list[np.ndarray],
                          mismatch) -> bool:
    """``outputs[q]`` receives rank q's ``inputs[this rank]``, blocks of any sizes (MoE token
    routing): a first phase publishes every rank's send counts (control block), so each rank
    checks what it expects against what is coming (``mismatch(q, detail)`` raises) and all
    agree on the longest rank's bytes; then every rank's blocks, concatenated in destination
    order, go through the slots piece by piece as :func:`all_to_all_shm`'s do.

    Returns False, having moved nothing, when the longest rank's bytes need more pieces than
    an op may take (every rank agrees): the caller sends them over sockets instead.
    """
    n, me = op.size, op.rank
    dtype = inputs[0].dtype
    mine = np.array([x.size for x in inputs], np.int64)
    op.arena.write_counts(mine)
    op.phase()
    sent = np.stack([mine if q == me else op.arena.counts(q, n) for q in range(n)])  # [src, dst]
    for q in range(n):
        if sent[q, me] != outputs[q].size:
            mismatch(q, f"all_to_all: rank index {q} sends {sent[q, me]} elements to rank index "
                        f"{me}, which expects {outputs[q].size}: output_list[{q}] (or "
                        "output_split_sizes) must match that rank's input for this rank")
    longest = int(sent.sum(axis=1).max())
    if longest * dtype.itemsize > MAX_PIECES * half_slot(op.arena.slot_limit):
        return False
    fit(op, longest * dtype.itemsize)
    starts = np.zeros((n, n + 1), np.int64)                # [src, dst]: where blocks begin
    np.cumsum(sent, axis=1, out=starts[:, 1:])
    outputs[me][...] = inputs[me]
    op.acquire()
    for start, stop, region in _pieces(op, longest, dtype.itemsize):
        staged = op.slot(me, dtype, stop - start, 0, region)
        for j in range(n):                                  # our stream's [start, stop)
            lo, hi = max(start, starts[me, j]), min(stop, starts[me, j + 1])
            if hi > lo and j != me:
                staged[lo - start:hi - start] = inputs[j][lo - starts[me, j]:hi - starts[me, j]]
        op.phase()
        for q in op.peers:                                  # our block of q's stream
            lo, hi = max(start, starts[q, me]), min(stop, starts[q, me + 1])
            if hi > lo:
                outputs[q][lo - starts[q, me]:hi - starts[q, me]] = \
                    op.slot(q, dtype, hi - lo, lo - start, region)
    op.release()
    return True
