"""DiLoCo's option checks and fragment split (no processes): bad options fail on the rank
that passed them, before any communication, saying what to pass instead."""

import pytest
import torch
from torch import nn

from ringrt.torch.localsgd import _check_options, _error_feedback, _split


def params():
    return list(nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)).parameters())


@pytest.mark.parametrize(("options", "words"), [
    (dict(sync_every=0), "sync_every must be a positive int"),
    (dict(sync_every=10, fragments=3), "must be a multiple of fragments"),
    (dict(sync_every=10, fragments=5), "fragments must be an int in 1..4"),
    (dict(sync_every=10, compress="fp8"), "compress must be one of"),
    (dict(sync_every=10, outer_momentum=1.0), "0 <= outer_momentum < 1"),
])
def test_bad_options_say_what_to_pass(options, words):
    full = dict(fragments=1, compress=None, outer_lr=0.7, outer_momentum=0.9) | options
    with pytest.raises(ValueError, match=words):
        _check_options(params(), full["sync_every"], full["fragments"], full["compress"],
                       full["outer_lr"], full["outer_momentum"])


def test_float64_parameters_are_refused():
    with pytest.raises(ValueError, match="float32 CPU"):
        _check_options([torch.zeros(3, dtype=torch.float64, requires_grad=True)], 4, 1, None,
                       0.7, 0.9)


def test_fragments_are_contiguous_non_empty_and_balanced():
    ps = params()                            # 512, 32, 128, 4 values
    assert [[p.numel() for p in f] for f in _split(ps, 2)] == [[512], [32, 128, 4]]
    assert [[p.numel() for p in f] for f in _split(ps, 4)] == [[512], [32], [128], [4]]
    assert [len(f) for f in _split(ps, 1)] == [4]


@pytest.mark.parametrize(("error_feedback", "compress", "words"), [
    (True, None, "error_feedback=True needs compress='bf16' or 'int8'"),
    (1, "int8", "error_feedback must be True, False or None"),
])
def test_bad_error_feedback_says_what_to_pass(error_feedback, compress, words):
    with pytest.raises(ValueError, match=words):
        _error_feedback(error_feedback, compress, default=False)


@pytest.mark.parametrize(("default", "compress", "on"), [
    (True, "int8", True), (True, None, False), (False, "bf16", False)])
def test_error_feedback_by_default_only_when_compressing(default, compress, on):
    assert _error_feedback(None, compress, default) is on
