"""Latency-bound algorithms: recursive doubling, binomial trees, and a pipelined chain.

Recursive doubling handles any group size: with p the largest power of two <= n and
rem = n - p, the first 2*rem ranks pair up (even -> odd) before the exchange rounds, and the
odd ranks hand the result back after — the scheme of Thakur, Rabenseifner & Gropp (2005).
Every rank ends with bit-identical data because each combine is commutative bit for bit.
"""

from __future__ import annotations

import numpy as np

from ringrt._algorithms.segments import segments


def all_reduce_recursive_doubling(ex, flat: np.ndarray, combine) -> None:
    """In-place all-reduce of a 1-D array in ceil(log2 n) (+2 if n is not a power of 2) steps."""
    n, r = ex.size, ex.rank
    if n == 1:
        return
    p = 1 << (n.bit_length() - 1)
    rem = n - p
    if r < 2 * rem and r % 2 == 0:                      # folded into rank r + 1
        ex.send(r + 1, flat, snapshot=True)
        flat[:] = ex.as_array(ex.recv(r + 1), flat.dtype, flat.size, r + 1)
        return
    if r < 2 * rem:
        combine(flat, ex.as_array(ex.recv(r - 1), flat.dtype, flat.size, r - 1))
        virtual = r // 2
    else:
        virtual = r - rem
    mask = 1
    while mask < p:
        partner_virtual = virtual ^ mask
        partner = partner_virtual * 2 + 1 if partner_virtual < rem else partner_virtual + rem
        ex.send(partner, flat, snapshot=True)
        combine(flat, ex.as_array(ex.recv(partner), flat.dtype, flat.size, partner))
        mask <<= 1
    if r < 2 * rem:
        ex.send(r - 1, flat, snapshot=True)


def broadcast_binomial(ex, flat: np.ndarray, root: int) -> None:
    """Binomial-tree broadcast of a 1-D array from group rank ``root``."""
    n = ex.size
    relative = (ex.rank - root) % n
    mask = 1
    while mask < n:
        if relative & mask:
            parent = (relative - mask + root) % n
            flat[:] = ex.as_array(ex.recv(parent), flat.dtype, flat.size, parent)
            break
        mask <<= 1
    mask >>= 1
    while mask > 0:
        if relative + mask < n:
            ex.send((relative + mask + root) % n, flat)
        mask >>= 1


def broadcast_chain(ex, flat: np.ndarray, root: int) -> None:
    """Pipelined chain broadcast: root -> root+1 -> ... segment by segment."""
    n = ex.size
    if n == 1:
        return
    relative = (ex.rank - root) % n
    parent, child = (ex.rank - 1) % n, (ex.rank + 1) % n
    last = relative == n - 1
    for a, b in segments(0, flat.size, flat.itemsize):
        if relative == 0:
            ex.send(child, flat[a:b])
            continue
        buffer = ex.recv(parent)
        flat[a:b] = ex.as_array(buffer, flat.dtype, b - a, parent)
        if not last:
            ex.send(child, buffer)


def reduce_binomial(ex, flat: np.ndarray, combine, root: int) -> None:
    """Binomial-tree reduce to ``root``. ``flat`` is overwritten with partial results on
    every rank (callers pass a scratch copy on non-roots)."""
    n = ex.size
    relative = (ex.rank - root) % n
    mask = 1
    while mask < n:
        if relative & mask:
            ex.send((relative - mask + root) % n, flat)
            return
        child = relative + mask
        if child < n:
            peer = (child + root) % n
            combine(flat, ex.as_array(ex.recv(peer), flat.dtype, flat.size, peer))
        mask <<= 1


def reduce_chain(ex, flat: np.ndarray, combine, root: int) -> None:
    """Pipelined chain reduce: segments flow root-1 -> ... -> root+1 -> root, each rank adding
    its own part on the way, so every link carries the data once (a ring reduce-scatter plus a
    gather would load the root's link with 2(n-1)/n of it). ``flat`` is overwritten on every
    rank (callers pass a scratch copy on non-roots)."""
    n = ex.size
    if n == 1:
        return
    relative = (ex.rank - root) % n
    parent, child = (ex.rank - 1) % n, (ex.rank + 1) % n
    for a, b in segments(0, flat.size, flat.itemsize):
        if relative < n - 1:
            combine(flat[a:b], ex.as_array(ex.recv(child), flat.dtype, b - a, child))
        if relative > 0:
            ex.send(parent, flat[a:b])


def barrier(ex) -> None:
    """Every rank waits for every other: recursive doubling of an empty payload."""
    all_reduce_recursive_doubling(ex, np.zeros(0, np.uint8), lambda into, other: None)
