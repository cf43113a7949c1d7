"""Reduction operators and the in-place NumPy kernels that apply them."""

from __future__ import annotations

import enum

import numpy as np


class ReduceOp(enum.IntEnum):
    """How ``all_reduce``, ``reduce`` and ``reduce_scatter`` combine the ranks' arrays.

    ``AVG`` is ``SUM`` divided by the group size, and is only defined for floating dtypes.
    On ``bool`` arrays ``SUM``/``MAX`` are logical or, ``PRODUCT``/``MIN`` logical and.
    """

    SUM = 1
    AVG = 2
    PRODUCT = 3
    MIN = 4
    MAX = 5


_UFUNCS = {
    ReduceOp.SUM: np.add,
    ReduceOp.AVG: np.add,            # divided by the group size once at the end
    ReduceOp.PRODUCT: np.multiply,
    ReduceOp.MIN: np.minimum,
    ReduceOp.MAX: np.maximum,
}
_BOOL_UFUNCS = {
    ReduceOp.SUM: np.logical_or,
    ReduceOp.MAX: np.logical_or,
    ReduceOp.PRODUCT: np.logical_and,
    ReduceOp.MIN: np.logical_and,
}


def combiner(op: ReduceOp, dtype: np.dtype):
    """Return ``combine(into, other, out=None)``: ``out = into (op) other``, by default in
    place into ``into``.

    All our ufuncs are commutative bit-for-bit (IEEE add/multiply/min/max), which is why two
    ranks computing ``a + b`` and ``b + a`` end with identical bits.
    """
    ufunc = _BOOL_UFUNCS[op] if dtype == np.bool_ else _UFUNCS[op]

    def combine(into: np.ndarray, other: np.ndarray, out: np.ndarray | None = None) -> None:
        ufunc(into, other, out=into if out is None else out)

    return combine


def finish(op: ReduceOp, array: np.ndarray, group_size: int) -> None:
    """Apply the final step of ``op`` (the division of AVG) in place."""
    if op == ReduceOp.AVG and group_size > 1:
        np.divide(array, array.dtype.type(group_size), out=array)
