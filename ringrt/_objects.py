"""Encoding Python objects for the ``*_object`` collectives: msgpack, never pickle.

Carried: None, bool, int (64-bit), float, str, bytes, list, dict, tuple (kept a tuple), NumPy
arrays and NumPy scalars (dtype and shape kept). Anything else raises ``TypeError`` on the
sender before anything is sent.
"""

from __future__ import annotations

import msgpack
import numpy as np

_ARRAY, _TUPLE, _SCALAR = 1, 2, 3


def _default(value):
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("a NumPy array of dtype object cannot be sent")
        payload = [value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()]
        return msgpack.ExtType(_ARRAY, msgpack.packb(payload))
    if isinstance(value, tuple):
        return msgpack.ExtType(_TUPLE, encode(list(value)))
    if isinstance(value, np.generic):
        return msgpack.ExtType(_SCALAR, msgpack.packb([value.dtype.str, value.tobytes()]))
    raise TypeError(f"objects of type {type(value).__name__} cannot be sent")


def _ext_hook(code: int, data: bytes):
    if code == _ARRAY:
        dtype, shape, raw = msgpack.unpackb(data)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape).copy()
    if code == _TUPLE:
        return tuple(decode(data))
    if code == _SCALAR:
        dtype, raw = msgpack.unpackb(data)
        return np.frombuffer(raw, dtype=np.dtype(dtype))[0]
    return msgpack.ExtType(code, data)


def encode(value) -> bytes:
    """Serialise ``value``.

    Raises:
        TypeError: ``value`` holds something msgpack + NumPy cannot carry.
    """
    try:
        return msgpack.packb(value, default=_default, strict_types=True, use_bin_type=True)
    except (TypeError, OverflowError, ValueError) as exc:
        raise TypeError(
            f"{exc}: object collectives carry None, bool, int, float, str, bytes, list, tuple, "
            "dict and NumPy arrays/scalars (msgpack; ringrt never pickles)"
        ) from None


def decode(data) -> object:
    """Inverse of :func:`encode`."""
    return msgpack.unpackb(bytes(data), ext_hook=_ext_hook, raw=False, strict_map_key=False)
