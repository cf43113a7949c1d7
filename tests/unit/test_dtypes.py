"""bfloat16 and complex: wire codes, reduction kernels and argument checks (pure logic)."""

import struct

import numpy as np
import pytest

from ringrt import _validate
from ringrt._comm import wire
from ringrt._dtypes import BFLOAT16, name, narrow, widen
from ringrt._reduce_ops import ReduceOp, combiner, finish


def _round_to_nearest_even(value: float) -> int:
    """c10::detail::round_to_nearest_even, written out scalar by scalar (the reference)."""
    if value != value:
        return 0x7FC0
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    return ((bits + ((bits >> 16) & 1) + 0x7FFF) >> 16) & 0xFFFF


def _bf16(values) -> np.ndarray:
    out = np.empty(len(values), BFLOAT16)
    out.view(np.uint16)[...] = [_round_to_nearest_even(float(v)) for v in
                                np.asarray(values, np.float32)]
    return out


def test_narrow_rounds_like_c10_including_ties_infinities_and_nan():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.standard_normal(2000).astype(np.float32) * 1e3,
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.3895313e38, 1e-40, -1e-40], np.float32),
        # exact ties between two bfloat16 values: round to the even one
        (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32),
    ])
    out = np.empty(values.size, BFLOAT16)
    narrow(values, out)
    assert out.view(np.uint16).tolist() == _bf16(values).view(np.uint16).tolist()


def test_widen_is_exact_and_the_sum_rounds_once_per_addition():
    a = _bf16([1.0, 256.0, 1e-3, -7.5])
    b = _bf16([2.0 ** -8, 1.0, 1e-3, 7.5])
    np.testing.assert_array_equal(widen(a), np.array([1.0, 256.0, 0.0009994507, -7.5],
                                                     np.float32))
    into = a.copy()
    combiner(ReduceOp.SUM, BFLOAT16)(into, b)
    want = _bf16(widen(a) + widen(b))                   # float32 add, one rounding
    assert into.view(np.uint16).tolist() == want.view(np.uint16).tolist()
    assert widen(into)[0] == 1.0 and widen(into)[1] == 256.0   # ties to even: 1 + 2^-8 -> 1


def test_bfloat16_min_max_product_and_avg():
    a, b = _bf16([1.0, -3.0, 2.5]), _bf16([2.0, -4.0, 0.5])
    for op, want in ((ReduceOp.MIN, [1.0, -4.0, 0.5]), (ReduceOp.MAX, [2.0, -3.0, 2.5]),
                     (ReduceOp.PRODUCT, [2.0, 12.0, 1.25])):
        out = np.empty(3, BFLOAT16)
        combiner(op, BFLOAT16)(a, b, out)
        np.testing.assert_array_equal(widen(out), np.array(want, np.float32))
    total = _bf16([6.0, 3.0, 1.0])
    finish(ReduceOp.AVG, total, 4)
    np.testing.assert_array_equal(widen(total), np.array([1.5, 0.75, 0.25], np.float32))


def test_complex_sum_product_avg():
    a = np.array([1 + 2j, 3 - 1j], np.complex64)
    combiner(ReduceOp.PRODUCT, a.dtype)(a, np.array([2j, 1 + 1j], np.complex64))
    np.testing.assert_array_equal(a, np.array([-4 + 2j, 4 + 2j], np.complex64))
    finish(ReduceOp.AVG, a, 2)
    np.testing.assert_array_equal(a, np.array([-2 + 1j, 2 + 1j], np.complex64))


def test_wire_codes_tell_bfloat16_from_uint16_and_name_them():
    codes = {wire.DTYPE_CODES[np.dtype(d)] for d in (np.uint16, np.int16, np.float16, BFLOAT16,
                                                       np.complex64, np.complex128)}
    assert len(codes) == 6
    assert name(BFLOAT16) == "bfloat16" and name(np.complex64) == "complex64"
    signature = (1, wire.DTYPE_CODES[BFLOAT16], 4, -1, 1)
    assert "dtype=bfloat16" in wire.describe_signature(signature)


@pytest.mark.parametrize("op", [ReduceOp.MIN, ReduceOp.MAX])
def test_min_max_on_complex_is_refused(op):
    with pytest.raises(ValueError, match="not defined on complex"):
        _validate.reduce_op("all_reduce", op, np.dtype(np.complex128), 3)


def test_avg_is_accepted_on_bfloat16_and_complex_refused_on_ints():
    assert _validate.reduce_op("all_reduce", ReduceOp.AVG, BFLOAT16, 0) == ReduceOp.AVG
    assert _validate.reduce_op("all_reduce", ReduceOp.AVG, np.dtype(np.complex64), 0)
    with pytest.raises(ValueError, match="floating dtype"):
        _validate.reduce_op("all_reduce", ReduceOp.AVG, np.dtype(np.int32), 0)


def test_bitwise_ops_on_integers_and_bools_only():
    a = np.array([0b1100, 0b1010], np.int32)
    for op, want in ((ReduceOp.BAND, [0b1000, 0b0010]), (ReduceOp.BOR, [0b1110, 0b1011]),
                     (ReduceOp.BXOR, [0b0110, 0b1001])):
        out = np.empty(2, np.int32)
        combiner(op, a.dtype)(a, np.array([0b1010, 0b0011], np.int32), out)
        assert out.tolist() == want
    flags = np.array([True, False, True])
    combiner(ReduceOp.BXOR, flags.dtype)(flags, np.array([True, True, False]))
    assert flags.tolist() == [False, True, True]
    with pytest.raises(ValueError, match="integer or bool"):
        _validate.reduce_op("all_reduce", ReduceOp.BOR, np.dtype(np.float32), 1)
