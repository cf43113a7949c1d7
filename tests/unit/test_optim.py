"""SGD / Adam / AdamW against plain per-element references of torch.optim's documented algorithms.

The references below are written from the pseudo-code on
https://pytorch.org/docs/stable/generated/torch.optim.{SGD,Adam,AdamW}.html, one element at a
time in the parameter's dtype, deliberately without sharing code with ringrt.optim.
"""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from ringrt.optim import SGD, Adam, AdamW, Optimizer

SHAPES = {"w": (3, 4), "b": (5,), "scalar": ()}
STEPS = 24


# --------------------------------------------------------------------------- references


def ref_sgd(p, g, state, t, lr, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0):
    """torch SGD pseudo-code for one element; returns the new parameter value."""
    dt = type(p)
    if weight_decay != 0:
        g = g + dt(weight_decay) * p
    if momentum != 0:
        if t > 1:
            state["b"] = dt(momentum) * state["b"] + dt(1 - dampening) * g
        else:
            state["b"] = g
        g = g + dt(momentum) * state["b"] if nesterov else state["b"]
    return p - dt(lr) * g


def ref_adam(
    p, g, state, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False
):
    """torch Adam (decoupled=False) / AdamW (decoupled=True) pseudo-code for one element."""
    dt = type(p)
    b1, b2 = betas
    if decoupled:
        p = p - dt(lr * weight_decay) * p
    elif weight_decay != 0:
        g = g + dt(weight_decay) * p
    m = dt(b1) * state.get("m", dt(0)) + dt(1 - b1) * g
    v = dt(b2) * state.get("v", dt(0)) + dt(1 - b2) * g * g
    state["m"], state["v"] = m, v
    m_hat = m / dt(1 - b1**t)
    v_hat = v / dt(1 - b2**t)
    return p - dt(lr) * m_hat / (np.sqrt(v_hat) + dt(eps))


def ref_adamw(p, g, state, t, weight_decay=0.01, **hyper):
    """torch AdamW: as Adam, with decoupled weight decay defaulting to 0.01."""
    return ref_adam(p, g, state, t, weight_decay=weight_decay, decoupled=True, **hyper)


class Reference:
    """Drives a per-element reference over a dict of arrays, tracking per-name step counts."""

    def __init__(self, params, rule, hyper):
        self.params = {name: value.copy() for name, value in params.items()}
        self.rule, self.hyper = rule, hyper
        self.steps = {name: 0 for name in params}
        self.states = {name: [{} for _ in range(value.size)] for name, value in params.items()}

    def step(self, grads):
        for name, grad in grads.items():
            self.steps[name] += 1
            flat_p = self.params[name].reshape(-1)
            flat_g = grad.reshape(-1)
            for i in range(flat_p.size):
                flat_p[i] = self.rule(
                    flat_p[i], flat_g[i], self.states[name][i], self.steps[name], **self.hyper
                )


# --------------------------------------------------------------------------- fixtures


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def grad_sequence(dtype, steps=STEPS, seed=1):
    """Random grads per step; 'b' has no grad every third step (skipped, as torch skips None)."""
    rng = np.random.default_rng(seed)
    sequence = []
    for t in range(steps):
        grads = {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}
        if t % 3 == 2:
            del grads["b"]
        sequence.append(grads)
    return sequence


CASES = [
    (SGD, ref_sgd, dict(lr=0.1)),
    (SGD, ref_sgd, dict(lr=0.05, momentum=0.9)),
    (SGD, ref_sgd, dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    (SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True)),
    (SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (SGD, ref_sgd, dict(lr=0.05, momentum=0.7, dampening=0.3, weight_decay=0.05)),
    (SGD, ref_sgd, dict(lr=0.1, weight_decay=0.2)),
    (Adam, ref_adam, dict()),
    (Adam, ref_adam, dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    (Adam, ref_adam, dict(lr=0.01, weight_decay=0.1)),
    (AdamW, ref_adamw, dict()),
    (AdamW, ref_adamw, dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.3)),
    (AdamW, ref_adamw, dict(lr=0.01, weight_decay=0.0)),
]
CASE_IDS = [f"{cls.__name__}-{hyper}" for cls, _, hyper in CASES]


def assert_close(actual, expected, dtype):
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=rtol, err_msg=name)


# --------------------------------------------------------------------------- update rules


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, rule, hyper", CASES, ids=CASE_IDS)
def test_matches_reference(cls, rule, hyper, dtype):
    params = make_params(dtype)
    reference = Reference(params, rule, hyper)
    arrays = dict(params)
    opt = cls(params, **hyper)
    for grads in grad_sequence(dtype):
        opt.step(grads)
        reference.step(grads)
    for name in params:
        assert params[name] is arrays[name], "params must be updated in place"
        assert params[name].dtype == dtype
    assert_close(params, reference.params, dtype)
    assert opt.state["w"]["step"] == STEPS and opt.state["b"]["step"] == STEPS - STEPS // 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls, rule, hyper", CASES, ids=CASE_IDS)
def test_flat_buffer_equals_per_tensor(cls, rule, hyper, dtype):
    """One flat 1-D buffer gives bit-identical results, so ZeRO's sharding is exact."""
    params = make_params(dtype)
    names = list(params)
    flat = {"shard": np.concatenate([params[n].reshape(-1) for n in names])}
    per_tensor, flat_opt = cls(params, **hyper), cls(flat, **hyper)
    rng = np.random.default_rng(7)
    for _ in range(STEPS):
        grads = {n: rng.standard_normal(SHAPES[n]).astype(dtype) for n in names}
        per_tensor.step(grads)
        flat_opt.step({"shard": np.concatenate([grads[n].reshape(-1) for n in names])})
    expected = np.concatenate([params[n].reshape(-1) for n in names])
    np.testing.assert_array_equal(flat["shard"], expected)


def test_flat_view_into_larger_buffer_is_updated_in_place():
    buffer = np.zeros(10)
    shard = buffer[3:7]
    opt = Adam({"shard": shard}, lr=0.1)
    opt.step({"shard": np.ones(4)})
    assert np.all(buffer[3:7] < 0) and np.all(buffer[:3] == 0) and np.all(buffer[7:] == 0)


def test_empty_shard_is_fine():
    opt = Adam({"shard": np.zeros(0, np.float32)})
    opt.step({"shard": np.zeros(0, np.float32)})
    assert opt.state_bytes() == 0


# --------------------------------------------------------------------------- lr and groups


@pytest.mark.parametrize("via", ["attribute", "param_groups"])
def test_changing_lr_takes_effect(via):
    params = make_params(np.float64)
    reference = Reference(params, ref_adam, dict(lr=0.01))
    opt = Adam(params, lr=0.01)
    for t, grads in enumerate(grad_sequence(np.float64, steps=12)):
        lr = 0.01 * 0.5 ** (t // 4)
        if via == "attribute":
            opt.lr = lr
        else:
            opt.param_groups[0]["lr"] = lr
        reference.hyper["lr"] = lr
        opt.step(grads)
        reference.step(grads)
    assert opt.lr == opt.param_groups[0]["lr"] == 0.0025
    assert_close(params, reference.params, np.float64)


def test_param_groups_shape():
    opt = AdamW(make_params(np.float32), lr=0.02)
    (group,) = opt.param_groups
    assert group == {
        "lr": 0.02,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.01,
        "params": ["w", "b", "scalar"],
    }
    assert isinstance(opt, Optimizer)


def test_setting_negative_lr_raises():
    opt = SGD(make_params(np.float32), lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0


# --------------------------------------------------------------------------- state_dict


def plain_types_only(value):
    """True if value is made of dicts/lists/str/numbers/ndarrays only (msgpack/npy friendly)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_types_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_types_only(v) for v in value)
    return isinstance(value, (str, int, float, bool, np.ndarray)) or value is None


def through_json_and_npy(state_dict, tmp_path):
    """Round-trip a state dict as a JSON skeleton plus one .npy file per array."""
    arrays = {}

    def strip(value, path):
        if isinstance(value, dict):
            return {k: strip(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, np.ndarray):
            file = tmp_path / f"{len(arrays)}.npy"
            np.save(file, value)
            arrays[path] = file
            return {"__npy__": str(file)}
        return value

    def restore(value):
        if isinstance(value, dict):
            if "__npy__" in value:
                return np.load(value["__npy__"])
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        return value

    return restore(json.loads(json.dumps(strip(state_dict, ""))))


@pytest.mark.parametrize("cls, rule, hyper", CASES, ids=CASE_IDS)
def test_state_dict_round_trip_continues_identically(cls, rule, hyper, tmp_path):
    params = make_params(np.float32)
    opt = cls(params, **hyper)
    sequence = grad_sequence(np.float32)
    for grads in sequence[:10]:
        opt.step(grads)
    saved = opt.state_dict()
    assert plain_types_only(saved)
    resumed_params = {name: value.copy() for name, value in params.items()}
    resumed = cls(resumed_params, lr=123.0)
    resumed.load_state_dict(through_json_and_npy(saved, tmp_path))
    assert resumed.param_groups[0] == opt.param_groups[0]
    for grads in sequence[10:]:
        opt.step(grads)
        resumed.step(grads)
    for name in params:
        np.testing.assert_array_equal(resumed_params[name], params[name])


def test_state_dict_is_a_snapshot():
    params = make_params(np.float64)
    opt = Adam(params)
    opt.step({"w": np.ones(SHAPES["w"])})
    saved = opt.state_dict()
    before = saved["state"]["w"]["exp_avg"].copy()
    opt.step({"w": np.ones(SHAPES["w"])})
    np.testing.assert_array_equal(saved["state"]["w"]["exp_avg"], before)


def test_state_dict_layout():
    params = make_params(np.float32)
    opt = Adam(params)
    opt.step({"w": np.ones(SHAPES["w"], np.float32)})
    saved = opt.state_dict()
    assert set(saved) == {"state", "param_groups"}
    assert set(saved["state"]) == {"w"}
    assert set(saved["state"]["w"]) == {"step", "exp_avg", "exp_avg_sq"}
    assert saved["state"]["w"]["step"] == 1 and type(saved["state"]["w"]["step"]) is int
    assert saved["param_groups"][0]["betas"] == [0.9, 0.999]


def test_load_state_dict_rejects_unknown_name():
    saved = Adam({"x": np.zeros(3)}).state_dict()
    saved["state"] = {"x": {"step": 1, "exp_avg": np.zeros(3), "exp_avg_sq": np.zeros(3)}}
    saved["param_groups"][0].pop("params")
    with pytest.raises(ValueError, match="unknown parameter 'x'"):
        Adam({"y": np.zeros(3)}).load_state_dict(saved)


def test_load_state_dict_rejects_other_params():
    saved = Adam({"x": np.zeros(3)}).state_dict()
    with pytest.raises(ValueError, match=r"saved for parameters \['x'\]"):
        Adam({"y": np.zeros(3)}).load_state_dict(saved)


def test_load_state_dict_rejects_wrong_shape():
    opt = Adam({"x": np.zeros(3)})
    opt.step({"x": np.ones(3)})
    saved = opt.state_dict()
    with pytest.raises(
        ValueError,
        match=r"'x' exp_avg has shape \(3,\) but the parameter has "
        r"shape \(4,\)",
    ):
        Adam({"x": np.zeros(4)}).load_state_dict(saved)


def test_load_state_dict_rejects_missing_entries():
    opt = Adam({"x": np.zeros(3)})
    opt.step({"x": np.ones(3)})
    saved = opt.state_dict()
    del saved["state"]["x"]["exp_avg_sq"]
    with pytest.raises(KeyError, match="exp_avg_sq"):
        Adam({"x": np.zeros(3)}).load_state_dict(saved)
    with pytest.raises(KeyError, match="param_groups"):
        Adam({"x": np.zeros(3)}).load_state_dict({"state": {}})


def test_load_state_dict_rejects_bad_hyperparameters():
    saved = Adam({"x": np.zeros(3)}).state_dict()
    saved["param_groups"][0]["betas"] = [1.5, 0.9]
    with pytest.raises(ValueError, match="beta"):
        Adam({"x": np.zeros(3)}).load_state_dict(saved)


def test_state_bytes():
    params = make_params(np.float32)
    param_bytes = sum(value.nbytes for value in params.values())
    adam = Adam(params)
    assert adam.state_bytes() == 0
    adam.step({name: np.ones_like(value) for name, value in params.items()})
    assert adam.state_bytes() == 2 * param_bytes
    sgd = SGD(make_params(np.float32), lr=0.1, momentum=0.9)
    sgd.step({"w": np.ones(SHAPES["w"], np.float32)})
    assert sgd.state_bytes() == np.zeros(SHAPES["w"], np.float32).nbytes
    assert SGD(make_params(np.float32), lr=0.1).state_bytes() == 0


# --------------------------------------------------------------------------- efficiency


@pytest.mark.parametrize(
    "cls, hyper",
    [
        (Adam, dict(weight_decay=0.1)),
        (AdamW, dict()),
        (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ],
)
def test_step_allocates_no_full_size_temporaries(cls, hyper):
    size = 1 << 20
    shard = {"shard": np.zeros(size, np.float64)}
    grads = {"shard": np.ones(size, np.float64)}
    opt = cls(shard, **hyper)
    opt.step(grads)  # first step allocates state and scratch
    tracemalloc.start()
    try:
        opt.step(grads)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size * 8 // 4, f"a step allocated {peak} bytes for a {size * 8}-byte shard"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: SGD(p, lr=-0.1), "lr"),
        (lambda p: SGD(p, lr=float("nan")), "lr"),
        (lambda p: SGD(p, lr=0.1, momentum=-0.5), "momentum"),
        (lambda p: SGD(p, lr=0.1, weight_decay=-1e-4), "weight_decay"),
        (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov"),
        (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
        (lambda p: SGD(p, lr=0.1, dampening=-1.0), "dampening"),
        (lambda p: Adam(p, lr=-1e-3), "lr"),
        (lambda p: Adam(p, eps=-1e-8), "eps"),
        (lambda p: Adam(p, betas=(1.0, 0.999)), "index 0"),
        (lambda p: Adam(p, betas=(0.9, 1.0)), "index 1"),
        (lambda p: Adam(p, betas=(-0.1, 0.999)), "index 0"),
        (lambda p: Adam(p, betas=(0.9,)), "pair"),
        (lambda p: Adam(p, weight_decay=-0.1), "weight_decay"),
        (lambda p: AdamW(p, weight_decay=-0.1), "weight_decay"),
        (lambda p: AdamW(p, lr="fast"), "number"),
    ],
)
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make(make_params(np.float32))


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({}, ValueError, "empty"),
        ([np.zeros(3)], TypeError, "dict"),
        ({"x": [1.0, 2.0]}, TypeError, "numpy.ndarray"),
        ({"x": np.zeros(3, np.int64)}, TypeError, "floating-point"),
    ],
)
def test_bad_params_raise(params, error, match):
    with pytest.raises(error, match=match):
        Adam(params)


def test_read_only_param_raises():
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD({"x": frozen}, lr=0.1)


def test_bad_grads_raise():
    opt = SGD({"x": np.zeros(3)}, lr=0.1)
    with pytest.raises(KeyError, match="unknown parameters"):
        opt.step({"y": np.zeros(3)})
    with pytest.raises(ValueError, match=r"shape \(4,\) but the parameter has shape \(3,\)"):
        opt.step({"x": np.zeros(4)})


def test_bad_grad_leaves_every_param_untouched():
    params = {"a": np.ones(2), "b": np.ones(3)}
    opt = SGD(params, lr=0.1)
    with pytest.raises(ValueError, match="'b'"):
        opt.step({"a": np.ones(2), "b": np.ones(4)})
    assert np.all(params["a"] == 1) and opt.state == {}


def test_none_grad_is_skipped():
    params = {"x": np.ones(3), "y": np.ones(2)}
    opt = Adam(params)
    opt.step({"x": np.ones(3), "y": None})
    assert "y" not in opt.state and np.all(params["y"] == 1)
    assert opt.state["x"]["step"] == 1
