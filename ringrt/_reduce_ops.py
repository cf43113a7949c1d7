"""Reduction operators and the in-place NumPy kernels that apply them."""

from __future__ import annotations

import enum
import functools

import numpy as np

from ringrt._dtypes import BFLOAT16, narrow, widen


class ReduceOp(enum.IntEnum):
    """How ``all_reduce``, ``reduce`` and ``reduce_scatter`` combine the ranks' arrays.

    ``AVG`` is ``SUM`` divided by the group size, and is only defined for floating dtypes
    (complex and bfloat16 included). On ``bool`` arrays ``SUM``/``MAX`` are logical or,
    ``PRODUCT``/``MIN`` logical and; ``MIN``/``MAX`` are not defined on complex numbers.
    ``BAND``, ``BOR`` and ``BXOR`` (bitwise and, or, xor, as in torch) take integer and bool
    arrays only.
    """

    SUM = 1
    AVG = 2
    PRODUCT = 3
    MIN = 4
    MAX = 5
    BAND = 6
    BOR = 7
    BXOR = 8


_UFUNCS = {
    ReduceOp.SUM: np.add,
    ReduceOp.AVG: np.add,            # divided by the group size once at the end
    ReduceOp.PRODUCT: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
    ReduceOp.BAND: np.bitwise_and,
    ReduceOp.BOR: np.bitwise_or,
    ReduceOp.BXOR: np.bitwise_xor,
}
_BOOL_UFUNCS = {
    ReduceOp.SUM: np.logical_or,
    ReduceOp.MAX: np.logical_or,
    ReduceOp.PRODUCT: np.logical_and,
    ReduceOp.MIN: np.logical_and,
    ReduceOp.BAND: np.logical_and,
    ReduceOp.BOR: np.logical_or,
    ReduceOp.BXOR: np.logical_xor,
}


@functools.lru_cache(maxsize=64)      # built on every reducing op; the kernels keep no state
def combiner(op: ReduceOp, dtype: np.dtype):
    """Return ``combine(into, other, out=None)``: ``out = into (op) other``, by default in
    place into ``into``.

    All our ufuncs are commutative bit-for-bit (IEEE add/multiply/min/max), which is why two
    ranks computing ``a + b`` and ``b + a`` end with identical bits.

    float16 and bfloat16 round every combination to their own precision (NumPy computes a
    float16 ``a + b`` in float32 and rounds once; bfloat16 does the same here), which is what
    c10's Half/BFloat16 arithmetic, and so gloo, does: a sum over n ranks is rounded n - 1
    times, in the algorithm's order.
    """
    if dtype == BFLOAT16:
        return _bfloat16_combiner(_UFUNCS[op])
    ufunc = _BOOL_UFUNCS[op] if dtype == np.bool_ else _UFUNCS[op]

    def combine(into: np.ndarray, other: np.ndarray, out: np.ndarray | None = None) -> None:
        ufunc(into, other, out=into if out is None else out)

    return combine


def kernel(op: ReduceOp, dtype: np.dtype):
    """``kernel(into, other, out)``: the same as :func:`combiner`'s ``combine``, with ``out``
    required and passed positionally, which for a plain ufunc is the ufunc itself (no
    Python call in between: the small all_reduce's fast path)."""
    if dtype == BFLOAT16:
        return _bfloat16_combiner(_UFUNCS[op])
    return _BOOL_UFUNCS[op] if dtype == np.bool_ else _UFUNCS[op]


def _bfloat16_combiner(ufunc):
    def combine(into: np.ndarray, other: np.ndarray, out: np.ndarray | None = None) -> None:
        narrow(ufunc(widen(into), widen(other)), into if out is None else out)

    return combine


def finish(op: ReduceOp, array: np.ndarray, group_size: int) -> None:
    """Apply the final step of ``op`` (the division of AVG) in place."""
    if op != ReduceOp.AVG or group_size <= 1:
        return
    if array.dtype == BFLOAT16:
        narrow(widen(array) / np.float32(group_size), array)
    else:
        np.divide(array, array.dtype.type(group_size), out=array)
