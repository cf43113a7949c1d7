"""DiLoCo / compressed DDP without sockets: bad options raise clear ValueErrors before any
communication, and bf16 / int8 encodings stay within their error bounds."""

from __future__ import annotations

import numpy as np
import pytest

from ringrt._compress import PowerSGD, bf16_round, int8_decode, int8_encode
from ringrt._flat import FlatLayout
from ringrt.ddp import DistributedDataParallel
from ringrt.localsgd import DiLoCo, LocalSGD, sync_groups
from ringrt.optim import SGD


def inner():
    return SGD({"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)}, lr=0.1)


@pytest.mark.parametrize("options, words", [
    ({"sync_every": 0}, "sync_every (H) must be an integer >= 1"),
    ({"sync_every": 2.5}, "sync_every (H) must be an integer >= 1"),
    ({"sync_every": 6, "fragments": 4}, "fragments must be an integer >= 1 dividing"),
    ({"sync_every": 6, "fragments": 0}, "fragments must be an integer >= 1 dividing"),
    ({"sync_every": 6, "fragments": 3, "delay": 3}, "delay must be an integer in 0..2"),
    ({"sync_every": 4, "compress": "fp8"}, "compress must be one of"),
    ({"sync_every": 4, "outer_lr": 0}, "outer_lr must be > 0"),
    ({"sync_every": 4, "outer_momentum": 1.0}, "outer_momentum must be in [0, 1)"),
    ({"sync_every": 4, "compress": "int8", "int8_chunk": 0}, "int8_chunk must be"),
    ({"sync_every": 4, "error_feedback": True}, "error_feedback=True needs compress='bf16' "
                                                "or 'int8'"),
    ({"sync_every": 4, "compress": "int8", "error_feedback": "yes"},
     "error_feedback must be True, False or None"),
])
@pytest.mark.parametrize("wrapper", [DiLoCo, LocalSGD])
def test_bad_diloco_options_raise_value_error(wrapper, options, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        wrapper(inner(), **options)


@pytest.mark.parametrize("options, words", [
    ({"compress": "topk"}, "compress must be one of"),
    ({"sync_every": 0}, "sync_every must be an integer >= 1"),
    ({"sync_every": 4, "scope": "racks"}, "scope must be one of"),
    ({"sync_every": 4, "compress": "bf16"}, "compress='bf16' is for synchronous DDP"),
])
def test_bad_ddp_options_raise_value_error(options, words):
    with pytest.raises(ValueError, match=words):
        DistributedDataParallel({"w": np.zeros(3, np.float32)}, **options)


def test_unknown_scope_raises_value_error():
    with pytest.raises(ValueError, match="scope must be one of"):
        sync_groups("racks")


def test_powersgd_rank_must_be_positive():
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        PowerSGD(FlatLayout.of({"w": np.zeros((8, 8), np.float32)}), rank=0)


def test_bf16_round_trip_within_half_an_ulp():
    values = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 10
    got = bf16_round(values)
    assert np.all(np.abs(got - values) <= np.abs(values) * 2.0**-8)
    assert np.array_equal(bf16_round(got), got)              # bfloat16 values are fixed points


@pytest.mark.parametrize("size, chunk", [(1000, 256), (256, 256), (7, 4), (513, 64)])
def test_int8_round_trip_within_half_a_step_per_chunk(size, chunk):
    rng = np.random.default_rng(size)
    values = (rng.standard_normal(size) * rng.choice([1e-3, 1, 100], size)).astype(np.float32)
    values[:3] = 0
    codes, scales = int8_encode(values, chunk)
    assert codes.dtype == np.int8 and codes.size == size and scales.size == -(-size // chunk)
    got = int8_decode(codes, scales, chunk)
    bound = np.repeat(scales, chunk)[:size] * 0.5 * (1 + 1e-6)
    assert np.all(np.abs(got - values) <= bound)
    for i, lo in enumerate(range(0, size, chunk)):           # each chunk's scale is its own
        assert scales[i] == pytest.approx(np.abs(values[lo:lo + chunk]).max() / 127)
