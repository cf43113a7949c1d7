"""The NumPy dtypes ringrt carries, and bfloat16, which NumPy lacks.

``BFLOAT16`` is a 2-byte structured dtype over ``uint16`` storage: it has its own wire code,
so a bfloat16 array never matches a uint16 one, and NumPy's arithmetic refuses it, so every
reduction goes through :func:`widen` / :func:`narrow` (``_reduce_ops``). torch's bfloat16
tensors are viewed as it without a copy (``ringrt.torch``).

``narrow`` rounds float32 to the nearest bfloat16, ties to even, NaN to 0x7FC0: bit for bit
c10's ``round_to_nearest_even``, which torch and gloo use for every bfloat16 operation.
"""

from __future__ import annotations

import numpy as np

BFLOAT16 = np.dtype([("bfloat16", "<u2")])

_BFLOAT16_NAN = np.uint16(0x7FC0)


def widen(array: np.ndarray) -> np.ndarray:
    """The float32 values of a bfloat16 array (exact: bfloat16 is float32's top half)."""
    return (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def narrow(values: np.ndarray, out: np.ndarray) -> None:
    """Round float32 ``values`` to bfloat16 into ``out`` (nearest, ties to even)."""
    bits = values.view(np.uint32)
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = _BFLOAT16_NAN
    out.view(np.uint16)[...] = rounded


def name(dtype) -> str:
    """A dtype's name for messages: 'float32', 'bfloat16', 'none'."""
    if dtype is None:
        return "none"
    dtype = np.dtype(dtype)
    return "bfloat16" if dtype == BFLOAT16 else str(dtype)


def is_floating(dtype: np.dtype) -> bool:
    """True for the dtypes AVG is defined on: floating, complex and bfloat16."""
    return dtype == BFLOAT16 or np.issubdtype(dtype, np.inexact)
