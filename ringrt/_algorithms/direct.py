"""One-step algorithms: every rank sends straight to the ranks that need its data.

Sends are asynchronous, so a rank posts all of its sends first and then receives; with n-1
messages in flight at once the op costs about one message latency for small payloads.
"""

from __future__ import annotations

import numpy as np

from ringrt._algorithms.segments import segments


def _send_array(ex, peer: int, array: np.ndarray) -> None:
    for a, b in segments(0, array.size, array.itemsize):
        ex.send(peer, array[a:b])


def _recv_array(ex, peer: int, into: np.ndarray) -> None:
    for a, b in segments(0, into.size, into.itemsize):
        into[a:b] = ex.as_array(ex.recv(peer), into.dtype, b - a, peer)


def all_gather_direct(ex, outputs: list[np.ndarray], mine: np.ndarray) -> None:
    """``outputs[j]`` (1-D views) receives rank j's ``mine``."""
    for peer in range(ex.size):
        if peer != ex.rank:
            _send_array(ex, peer, mine)
    outputs[ex.rank][...] = mine
    for peer in _from_each(ex):
        _recv_array(ex, peer, outputs[peer])


def reduce_scatter_direct(ex, inputs: list[np.ndarray], output: np.ndarray, combine) -> None:
    """``output`` = reduction over ranks j (in rank order) of rank j's ``inputs[this rank]``."""
    for peer in range(ex.size):
        if peer != ex.rank:
            _send_array(ex, peer, inputs[peer])
    received = {ex.rank: inputs[ex.rank]}
    for peer in _from_each(ex):
        received[peer] = np.empty_like(output)
        _recv_array(ex, peer, received[peer])
    output[...] = received[0]
    for peer in range(1, ex.size):            # fixed order: the same bits run after run
        combine(output, received[peer])


def gather_direct(ex, outputs: list[np.ndarray] | None, mine: np.ndarray, root: int) -> None:
    """Root's ``outputs[j]`` receives rank j's ``mine``."""
    if ex.rank != root:
        _send_array(ex, root, mine)
        return
    outputs[root][...] = mine
    for peer in _from_each(ex):
        _recv_array(ex, peer, outputs[peer])


def scatter_direct(ex, inputs: list[np.ndarray] | None, output: np.ndarray, root: int) -> None:
    """Rank j's ``output`` receives root's ``inputs[j]``."""
    if ex.rank == root:
        for peer in range(ex.size):
            if peer != root:
                _send_array(ex, peer, inputs[peer])
        output[...] = inputs[root]
        return
    _recv_array(ex, root, output)


def all_to_all_direct(ex, outputs: list[np.ndarray], inputs: list[np.ndarray]) -> None:
    """Rank j's ``outputs[i]`` receives rank i's ``inputs[j]``."""
    for offset in range(1, ex.size):           # staggered so ranks don't all hit one peer
        _send_array(ex, (ex.rank + offset) % ex.size, inputs[(ex.rank + offset) % ex.size])
    outputs[ex.rank][...] = inputs[ex.rank]
    for peer in _from_each(ex):
        _recv_array(ex, peer, outputs[peer])


def _from_each(ex):
    """Peers in the order their messages are most likely to arrive (left neighbours first)."""
    return [(ex.rank - offset) % ex.size for offset in range(1, ex.size)]
