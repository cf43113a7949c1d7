"""Fuzz the object-collective payload decoder (``ringrt._objects.decode``): the bytes another
rank sent for ``broadcast_object_list`` & co.

Garbage, truncation, msgpack size bombs (a length prefix claiming far more than is there),
deep nesting and NumPy arrays whose dtype or shape lie about their bytes must all end in
``ProtocolError``, with memory bounded by the payload, and every value ``encode`` makes must
come back equal.
"""

from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringrt import _objects
from ringrt.errors import ProtocolError
from tests.fuzz._tried import tried

_ARRAY, _TUPLE, _SCALAR = 1, 2, 3


def _decode_bounded(data: bytes):
    """decode(data), asserting it allocated at most a few times the payload (plus slack)."""
    tried("object payload")
    tracemalloc.start()
    try:
        try:
            value = _objects.decode(data)
        except ProtocolError:
            value = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(data) + (1 << 20), f"{peak} bytes allocated for {len(data)}"
    return value


dtype_texts = st.sampled_from(["<f8", "<i4", "|u1", "|b1", "<c16", "|V0", "O", "|O", "<U3",
                               "(100000,100000)f8", "(3,)i2", "<M8[s]", "f16", "S0", "V8",
                               "", "bogus", "i" * 300]) | st.text(max_size=12)
shapes = st.lists(st.integers(-3, 2**62) | st.just(0) | st.integers(0, 8), max_size=6) \
    | st.lists(st.text(max_size=2), max_size=2)


def _ext(code, body):
    return msgpack.packb(msgpack.ExtType(code, body))


bombs = st.one_of(
    st.builds(lambda d, s, r: _ext(_ARRAY, msgpack.packb([d, s, r])), dtype_texts, shapes,
              st.binary(max_size=64)),
    st.builds(lambda d, r: _ext(_SCALAR, msgpack.packb([d, r])), dtype_texts,
              st.binary(max_size=32)),
    st.builds(lambda body: _ext(_ARRAY, body) if body else b"", st.binary(max_size=32)),
    st.builds(lambda body: _ext(_TUPLE, body), st.binary(max_size=32)),
    st.builds(lambda body: _ext(_SCALAR, body), st.binary(max_size=32)),
    # length prefixes claiming up to 4 GiB with a few bytes behind them
    st.builds(lambda lead, n, tail: lead + n.to_bytes(4, "big") + tail,
              st.sampled_from([b"\xdb", b"\xc6", b"\xdd", b"\xdf", b"\xc9"]),
              st.integers(0, 2**32 - 1), st.binary(max_size=16)),
    st.builds(lambda depth: b"\x91" * depth + b"\xc0", st.integers(1, 5000)),
)


@given(st.binary(max_size=256))
def test_any_bytes_decode_or_raise_protocol_error(data):
    _decode_bounded(data)


@given(bombs)
def test_bombs_and_lying_arrays_raise_protocol_error(data):
    value = _decode_bounded(data)
    if isinstance(value, np.ndarray):
        assert not value.dtype.hasobject


def _nested_tuples(depth: int) -> bytes:
    data = msgpack.packb(None)
    for _ in range(depth):
        data = _ext(_TUPLE, b"\x91" + data)
    return data


@pytest.mark.parametrize("depth", [33, 200, 2000])
def test_deeply_nested_tuples_raise_protocol_error(depth):
    """Each tuple is an ext holding another msgpack frame, unpacked by a nested unpackb with
    its context on the C stack: 200 levels (a 1 KB payload) crashed the process with a
    segfault before the limit."""
    with pytest.raises(ProtocolError, match="nested deeper than 32"):
        _objects.decode(_nested_tuples(depth))


def test_tuples_nest_up_to_the_limit_and_the_sender_refuses_deeper():
    value = None
    for _ in range(32):
        value = (value,)
    assert _objects.decode(_objects.encode(value)) == value
    with pytest.raises(TypeError, match="nested deeper than 32"):
        _objects.encode((value,))


def test_an_array_whose_shape_lies_is_refused_before_allocating():
    lying = _ext(_ARRAY, msgpack.packb(["<f8", [2**20, 2**20], b"\0" * 8]))
    with pytest.raises(ProtocolError, match="shape"):
        _objects.decode(lying)


values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=8)
    | st.builds(lambda shape, dt: np.arange(int(np.prod(shape)), dtype=dt).reshape(shape),
                st.lists(st.integers(0, 3), max_size=3), st.sampled_from(["f4", "i8", "u1"]))
    | st.builds(np.float64, st.floats(allow_nan=False)) | st.builds(np.int16, st.integers(-9, 9)),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(values)
def test_what_encode_makes_decodes_to_an_equal_value(value):
    tried("object payload")
    assert _same(_objects.decode(_objects.encode(value)), value)
