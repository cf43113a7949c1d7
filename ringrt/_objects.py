"""Encoding Python objects for the ``*_object`` collectives: msgpack, never pickle.

Carried: None, bool, int (64-bit), float, str, bytes, list, dict, tuple (kept a tuple), NumPy
arrays and NumPy scalars (dtype and shape kept); tuples nest at most 32 deep. Anything else
raises ``TypeError`` on the sender before anything is sent; a payload that is not one of these
raises ``ProtocolError`` on the receiver.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np

from ringrt.errors import ProtocolError

_ARRAY, _TUPLE, _SCALAR = 1, 2, 3


def _default_at(depth: int):
    def default(value):
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise TypeError("a NumPy array of dtype object cannot be sent")
            payload = [value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()]
            return msgpack.ExtType(_ARRAY, msgpack.packb(payload))
        if isinstance(value, tuple):
            if depth >= _MAX_NESTING:
                raise TypeError(f"tuples nested deeper than {_MAX_NESTING} cannot be sent")
            return msgpack.ExtType(_TUPLE, _pack(list(value), depth + 1))
        if isinstance(value, np.generic):
            return msgpack.ExtType(_SCALAR, msgpack.packb([value.dtype.str, value.tobytes()]))
        raise TypeError(f"objects of type {type(value).__name__} cannot be sent")
    return default


def _pack(value, depth: int) -> bytes:
    return msgpack.packb(value, default=_default_at(depth), strict_types=True, use_bin_type=True)


# Tuples inside tuples: each is an ext holding another msgpack frame, decoded by a nested
# msgpack.unpackb whose context sits on the C stack (~45 KB a level): 200 levels of a 1 KB
# payload overflowed the main thread's 8 MB stack (segfault), and a thread's may be 2 MB.
_MAX_NESTING = 32


class _Decoder:
    """Decodes one payload; every length the payload claims is checked against the bytes that
    are there before anything is allocated."""

    def __init__(self):
        self.depth = 0

    def unpack(self, data: bytes):
        return msgpack.unpackb(data, ext_hook=self.ext_hook, raw=False, strict_map_key=False)

    def ext_hook(self, code: int, data: bytes):
        if code == _ARRAY:
            return _array(*_fields(msgpack.unpackb(data), (str, list, bytes), "array"))
        if code == _TUPLE:
            self.depth += 1
            if self.depth > _MAX_NESTING:
                raise ProtocolError(f"tuples nested deeper than {_MAX_NESTING}")
            items = self.unpack(data)
            self.depth -= 1
            if not isinstance(items, list):
                raise ProtocolError("a tuple's body is not a list")
            return tuple(items)
        if code == _SCALAR:
            dtype, raw = _fields(msgpack.unpackb(data), (str, bytes), "scalar")
            dtype = _dtype(dtype)
            if len(raw) != dtype.itemsize:
                raise ProtocolError(f"a {dtype} scalar of {len(raw)} bytes")
            return np.frombuffer(raw, dtype=dtype)[0]
        return msgpack.ExtType(code, data)


def _fields(value, types: tuple, what: str) -> list:
    if not (isinstance(value, list) and len(value) == len(types)
            and all(isinstance(v, t) for v, t in zip(value, types))):
        raise ProtocolError(f"a NumPy {what} is not {[t.__name__ for t in types]}")
    return value


def _dtype(text: str) -> np.dtype:
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise ProtocolError(f"{text!r} is not a NumPy dtype") from exc
    if dtype.hasobject or dtype.itemsize == 0:
        raise ProtocolError(f"dtype {dtype} cannot be carried")
    return dtype


def _array(dtype: str, shape: list, raw: bytes) -> np.ndarray:
    dtype = _dtype(dtype)
    if not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 64:
        raise ProtocolError(f"array shape {shape[:8]} is not a list of sizes")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise ProtocolError(f"array of shape {shape[:8]} {dtype} in {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def encode(value) -> bytes:
    """Serialise ``value``.

    Raises:
        TypeError: ``value`` holds something msgpack + NumPy cannot carry.
    """
    try:
        return _pack(value, 0)
    except (TypeError, OverflowError, ValueError) as exc:
        raise TypeError(
            f"{exc}: object collectives carry None, bool, int, float, str, bytes, list, tuple, "
            "dict and NumPy arrays/scalars (msgpack; ringrt never pickles)"
        ) from None


def decode(data) -> object:
    """Inverse of :func:`encode`, for bytes that came from another rank.

    Raises:
        ProtocolError: ``data`` is not a payload :func:`encode` could have made (garbage,
            truncated, nested too deeply, or an array whose shape does not fit its bytes).
    """
    try:
        return _Decoder().unpack(bytes(data))
    except ProtocolError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError, RecursionError,
            msgpack.UnpackException) as exc:
        raise ProtocolError(f"object payload of {len(data)} bytes is not one ringrt encoded "
                            f"({type(exc).__name__}: {exc})") from None
