"""Rank-side workers for the DDP / ZeRO / checkpoint tests, and their single-process references.

Each worker is ``fn(rank, world_size, **args)`` run by ``tests/world.py``. The model is
``examples/mlp.py``'s MLP in float64 on the real digits data; step ``s`` trains on a fixed global
batch of ``BATCH`` rows (:func:`global_batch`), and rank ``r`` of ``W`` takes rows ``r::W`` of it,
so the average of the ranks' mean gradients is the single-process mean gradient.
"""

from __future__ import annotations

import os

import numpy as np

from examples.mlp import MLP, load_digits

SIZES = (64, 32, 16, 10)          # 2,778 parameters: not a multiple of 4, so ZeRO pads
# 33,738 parameters (264 KiB in float64): buckets above pyzmq's 64 KiB copy threshold, so the
# all-reduces take the zero-copy send path
WIDE_SIZES = (64, 256, 64, 10)
WIDE_BUCKET_MB = 0.1
BATCH = 32                        # global batch: 16 per rank at world 2, 8 at world 4
TINY_BUCKET_MB = 0.001            # 1,048 bytes: three buckets for SIZES in float64
OPTIMIZERS = {
    "adam": ("Adam", {"lr": 1e-2}),
    "sgd": ("SGD", {"lr": 0.1, "momentum": 0.9}),
}

_DATA = None


def data():
    """The digits training split, float64 (cached per process)."""
    global _DATA
    if _DATA is None:
        _DATA = load_digits(dtype=np.float64)[:2]
    return _DATA


def global_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
    """The global batch of step ``step`` (the same on every rank and in the reference)."""
    x, y = data()
    rows = np.random.default_rng(1000 + step).choice(len(y), BATCH, replace=False)
    return x[rows], y[rows]


def local_batch(step: int, rank: int, world_size: int):
    x, y = global_batch(step)
    return x[rank::world_size], y[rank::world_size]


def make_optimizer(kind: str, params):
    import ringrt.optim

    name, hparams = OPTIMIZERS[kind]
    return getattr(ringrt.optim, name)(params, **hparams)


def reference(kind: str, steps: int, sizes=SIZES) -> dict[str, np.ndarray]:
    """Single-process training: the unsharded optimizer on full-batch mean gradients."""
    model = MLP(sizes, seed=0, dtype=np.float64)
    optimizer = make_optimizer(kind, model.params)
    grads = {name: np.zeros_like(p) for name, p in model.params.items()}
    for step in range(steps):
        x, y = global_batch(step)
        model.loss_and_grads(x, y, grads)
        optimizer.step(grads)
    return model.params


# --- DDP --------------------------------------------------------------------------------------


def ddp_cases(rank: int, world_size: int, steps: int) -> dict:
    """Train with DDP + SGD(momentum) for every (overlap, bucket size); also no_sync and misuse."""
    import ringrt

    ringrt.init_process_group()
    out = {}
    for overlap in (False, True):
        for cap in (25, TINY_BUCKET_MB):
            params, buckets = _train_ddp(rank, world_size, steps, overlap, cap)
            out.update({f"ddp/{overlap}/{cap}/{k}": v for k, v in params.items()})
            out[f"buckets/{cap}"] = buckets
    params, _ = _train_ddp(rank, world_size, steps, True, TINY_BUCKET_MB, micro_steps=2)
    out.update({f"no_sync/{k}": v for k, v in params.items()})
    params, out["buckets/wide"] = _train_ddp(rank, world_size, steps, True, WIDE_BUCKET_MB,
                                             sizes=WIDE_SIZES)
    out.update({f"wide/{k}": v for k, v in params.items()})
    out.update({f"idioms/{k}": v for k, v in _train_ddp_idioms(rank, world_size, steps).items()})
    out["misuse"] = _ddp_misuse()
    ringrt.destroy_process_group()
    return out


def _train_ddp(rank, world_size, steps, overlap, cap, micro_steps=1, sizes=SIZES):
    from ringrt.ddp import DistributedDataParallel

    model = MLP(sizes, seed=rank, dtype=np.float64)        # differs per rank: broadcast fixes
    ddp = DistributedDataParallel(model.params, bucket_cap_mb=cap)
    model.params = ddp.params
    optimizer = make_optimizer("sgd", ddp.params)
    for step in range(steps):
        x, y = local_batch(step, rank, world_size)
        ddp.zero_grad()
        for micro in range(micro_steps):                    # split the local batch further
            context = ddp.no_sync() if micro < micro_steps - 1 else _nothing()
            with context:
                model.loss_and_grads(x[micro::micro_steps], y[micro::micro_steps], ddp.grads,
                                     ddp.grad_ready if overlap else None, accumulate=True)
                ddp.sync()
        for grad in ddp.grads.values():
            grad /= micro_steps
        optimizer.step(ddp.grads)
    return {k: v.copy() for k, v in ddp.params.items()}, len(ddp.buckets)


def _train_ddp_idioms(rank, world_size, steps, lr=0.1):
    """A plain NumPy loop, as users write it: gradients computed into the user's own arrays
    and handed over by assignment or +=, the update by ``ddp.params[k] -= lr * ddp.grads[k]``."""
    from ringrt.ddp import DistributedDataParallel

    model = MLP(SIZES, seed=rank, dtype=np.float64)
    ddp = DistributedDataParallel(model.params, bucket_cap_mb=TINY_BUCKET_MB)
    model.params = ddp.params
    mine = {name: np.zeros_like(p) for name, p in ddp.params.items()}
    for step in range(steps):
        x, y = local_batch(step, rank, world_size)
        model.loss_and_grads(x, y, mine)
        if step % 2:
            for name, grad in mine.items():
                ddp.grads[name] = grad                  # a new array: copied into the view
        else:
            ddp.zero_grad()
            for name, grad in mine.items():
                ddp.grads[name] += grad
        ddp.sync()
        for name in ddp.params:
            ddp.params[name] -= lr * ddp.grads[name]
    return {k: v.copy() for k, v in ddp.params.items()}


def reference_plain_sgd(steps: int, lr: float = 0.1) -> dict[str, np.ndarray]:
    """Single-process ``p -= lr * g`` on full-batch mean gradients."""
    model = MLP(SIZES, seed=0, dtype=np.float64)
    grads = {name: np.zeros_like(p) for name, p in model.params.items()}
    for step in range(steps):
        model.loss_and_grads(*global_batch(step), grads)
        for name, p in model.params.items():
            p -= lr * grads[name]
    return model.params


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _ddp_misuse() -> dict:
    """The error type and message of each misuse, keyed by case."""
    from ringrt.ddp import DistributedDataParallel

    ddp = DistributedDataParallel(MLP(SIZES, dtype=np.float64).params,
                                  bucket_cap_mb=TINY_BUCKET_MB)
    cases = {
        "unknown": lambda: ddp.grad_ready("nope"),
        "twice": lambda: (ddp.grad_ready("b2"), ddp.grad_ready("b2")),
        "wrong_shape": lambda: ddp.grads.__setitem__("w0", np.zeros((3, 3))),
        "mixed_dtypes": lambda: DistributedDataParallel({"a": np.zeros(2), "b": np.zeros(
            2, np.float32)}),
        "int_params": lambda: DistributedDataParallel({"a": np.zeros(2, np.int64)}),
    }
    errors = {}
    for case, call in cases.items():
        try:
            call()
            errors[case] = None
        except Exception as exc:  # noqa: BLE001 - the test asserts the type by name
            errors[case] = [type(exc).__name__, str(exc)]
    ddp.grad_ready("w2")                          # completes the first bucket: all-reduce starts
    try:
        ddp.zero_grad()
        errors["zero_grad_in_flight"] = None
    except RuntimeError as exc:
        errors["zero_grad_in_flight"] = ["RuntimeError", str(exc)]
    ddp.sync()
    return errors


# --- ZeRO -------------------------------------------------------------------------------------


def zero_cases(rank: int, world_size: int, steps: int) -> dict:
    """ZeRO-1 with each optimizer; returns final params and state bytes per optimizer kind."""
    import ringrt
    from ringrt.optim import ZeroRedundancyOptimizer

    ringrt.init_process_group()
    out = {}
    for kind, (name, hparams) in OPTIMIZERS.items():
        model = MLP(SIZES, seed=0, dtype=np.float64)
        optimizer = ZeroRedundancyOptimizer(model.params, getattr(ringrt.optim, name), **hparams)
        grads = {k: np.zeros_like(p) for k, p in model.params.items()}
        for step in range(steps):
            x, y = local_batch(step, rank, world_size)
            model.loss_and_grads(x, y, grads)
            optimizer.step(grads)
        out.update({f"{kind}/{k}": v for k, v in model.params.items()})
        out[f"state_bytes/{kind}"] = optimizer.state_bytes()
        out[f"shard/{kind}"] = list(optimizer.shard)
    ringrt.destroy_process_group()
    return out


# --- checkpoints ------------------------------------------------------------------------------


def checkpoint_run(rank: int, world_size: int, directory: str, start: int, stop: int,
                   save_at: list[int] = (), fault_stage: str | None = None) -> dict:
    """Train steps ``[start, stop)`` with ZeRO Adam and with DDP + Adam, saving at ``save_at``.

    ``start > 0`` loads the checkpoints first. With ``fault_stage``, rank 0 dies in the middle
    of the LAST save in ``save_at`` (at that stage of ``checkpoint.save``).
    """
    import ringrt
    from ringrt import checkpoint
    from ringrt.ddp import DistributedDataParallel
    from ringrt.optim import Adam, ZeroRedundancyOptimizer

    ringrt.init_process_group()
    out = {}
    zero_model, ddp_model = MLP(SIZES, dtype=np.float64), MLP(SIZES, dtype=np.float64)
    zero = ZeroRedundancyOptimizer(zero_model.params, Adam, lr=1e-2)
    ddp = DistributedDataParallel(ddp_model.params)
    ddp_model.params = ddp.params
    adam = Adam(ddp.params, lr=1e-2)
    runs = {"zero": (zero_model, zero), "ddp": (ddp_model, adam)}
    if start:
        for name, (model, optimizer) in runs.items():
            out[f"extra/{name}"] = checkpoint.load(os.path.join(directory, name), model.params,
                                                   optimizer)
    grads = {k: np.zeros_like(p) for k, p in zero_model.params.items()}
    for step in range(start, stop):
        x, y = local_batch(step, rank, world_size)
        zero_model.loss_and_grads(x, y, grads)
        zero.step(grads)
        ddp_model.loss_and_grads(x, y, ddp.grads)
        ddp.sync()
        adam.step(ddp.grads)
        if step + 1 in save_at:
            if fault_stage and rank == 0 and step + 1 == save_at[-1]:
                checkpoint.fault_hook = _die_at(fault_stage)
            for name, (model, optimizer) in runs.items():
                checkpoint.save(os.path.join(directory, name), model.params, optimizer,
                                extra={"step": step + 1, "world_size": world_size})
    for name, (model, _) in runs.items():
        out.update({f"{name}/{k}": v.copy() for k, v in model.params.items()})
    ringrt.destroy_process_group()
    return out


def _die_at(stage: str):
    def hook(current: str) -> None:
        if current == stage:
            os._exit(13)          # a crash: no cleanup, no exception handlers
    return hook
