"""Rank-side workers for the DiLoCo / compressed-DDP tests (run by tests/world.py).

Every replica trains ``examples/mlp.py``'s MLP (float64, :data:`workers.SIZES`) with plain SGD
on its own shard of :func:`workers.local_batch`; the test process simulates the same algorithm
in NumPy (tests/train/test_localsgd.py) and compares.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from examples.mlp import MLP
from tests.train.workers import SIZES, local_batch

INNER_LR = 0.1
STEPS = 13
# name -> DiLoCo keyword arguments; "local" marks LocalSGD, "ddp" the two-level DDP option.
DILOCO_CASES = {
    "h4-nodelay": {"sync_every": 4, "delay": 0},
    "h4-delay": {"sync_every": 4},
    "h4-f2": {"sync_every": 4, "fragments": 2},
    "h6-f3-delay2": {"sync_every": 6, "fragments": 3, "delay": 2},
    "h3-bf16": {"sync_every": 3, "compress": "bf16"},
    "h4-int8": {"sync_every": 4, "compress": "int8", "int8_chunk": 64},
    "local-h2": {"sync_every": 2, "delay": 0, "local": True},
    "ddp-ranks-h4": {"sync_every": 4, "fragments": 2, "ddp": True},
    "h4-int8-ef": {"sync_every": 4, "compress": "int8", "int8_chunk": 64,
                   "error_feedback": True},
    "h4-f2-bf16-ef": {"sync_every": 4, "fragments": 2, "compress": "bf16",
                      "error_feedback": True},
    "ddp-h3-int8-ef": {"sync_every": 3, "delay": 0, "compress": "int8", "int8_chunk": 32,
                       "error_feedback": True, "ddp": True},
}
DDP_CASES = {"powersgd-r2": {"compress": "powersgd", "powersgd_rank": 2},
             "powersgd-r1": {"compress": "powersgd", "powersgd_rank": 1},
             "bf16": {"compress": "bf16"}}


def cases(rank: int, world_size: int, ckpt_dir: str) -> dict:
    """Every DiLoCo case, every compressed-DDP case, and the checkpoint resume."""
    import ringrt

    ringrt.init_process_group()
    out = {}
    for name, options in DILOCO_CASES.items():
        residual = {}
        params = train_diloco(rank, world_size, options, residual=residual)
        out.update({f"{name}/{k}": v for k, v in params.items()})
        out.update({f"residual/{name}": v for v in residual.values()})
    for name, options in DDP_CASES.items():
        out.update({f"{name}/{k}": v for k, v in train_ddp(rank, world_size, options).items()})
    for case, options in RESUME.items():
        for name, params in resume_case(rank, world_size, f"{ckpt_dir}/diloco-{case}",
                                        options).items():
            out.update({f"{case}-{name}/{k}": v for k, v in params.items()})
    for case, options in COMPRESSED_RESUME.items():
        for name, params in compressed_resume_case(rank, f"{ckpt_dir}/{case}", options).items():
            out.update({f"{case}-{name}/{k}": v for k, v in params.items()})
    out.update(old_checkpoint_case(rank, f"{ckpt_dir}/old-format"))
    out.update(residual_restart_case(rank, f"{ckpt_dir}/diloco-int8-ef"))
    out.update(other_options_case(rank, f"{ckpt_dir}/psgd"))
    ringrt.destroy_process_group()
    return out


def _grads(model, step, rank, world_size, grads, on_layer_done=None):
    x, y = local_batch(step, rank, world_size)
    model.loss_and_grads(x, y, grads, on_layer_done)


def train_diloco(rank, world_size, options, steps=STEPS, residual=None):
    from ringrt.ddp import DistributedDataParallel
    from ringrt.localsgd import DiLoCo, LocalSGD
    from ringrt.optim import SGD

    options = dict(options)
    local, through_ddp = options.pop("local", False), options.pop("ddp", False)
    model = MLP(SIZES, seed=rank, dtype=np.float64)       # differs per rank: broadcast fixes
    if through_ddp:
        ddp = DistributedDataParallel(model.params, sync_every=options.pop("sync_every"),
                                      scope="ranks")
        model.params = ddp.params
        diloco = ddp.wrap_optimizer(SGD(ddp.params, lr=INNER_LR), **options)
        grads = ddp.grads
    else:
        wrapper = LocalSGD if local else DiLoCo
        diloco = wrapper(SGD(model.params, lr=INNER_LR), **options)
        grads = {k: np.zeros_like(v) for k, v in model.params.items()}
    for step in range(steps):
        _grads(model, step, rank, world_size, grads)
        if through_ddp:
            ddp.sync()
        diloco.step(grads)
    if residual is not None and diloco.residual is not None:
        residual["flat"] = diloco.residual.copy()
    return dict(model.params)


def train_ddp(rank, world_size, options, steps=STEPS):
    from ringrt.ddp import DistributedDataParallel
    from ringrt.optim import SGD

    model = MLP(SIZES, seed=rank, dtype=np.float64)
    ddp = DistributedDataParallel(model.params, **options)
    model.params = ddp.params
    optimizer = SGD(ddp.params, lr=INNER_LR)
    for step in range(steps):
        _grads(model, step, rank, world_size, ddp.grads)
        ddp.sync()
        optimizer.step(ddp.grads)
    return dict(model.params)


# name -> DiLoCo options of a run checkpointed and resumed
RESUME = {"int8": {"sync_every": 4, "fragments": 2, "compress": "int8"},
          "int8-ef": {"sync_every": 4, "fragments": 2, "compress": "int8", "int8_chunk": 64,
                      "error_feedback": True}}
RESUME_AT = 8


def resume_case(rank, world_size, ckpt_dir, options):
    """Uninterrupted (consolidating at RESUME_AT) vs checkpoint at RESUME_AT and resume in
    fresh objects; plus a state_dict round trip taken with a sync in flight."""
    from ringrt import checkpoint

    def run(stop_at=None, load_from=None, state_at=None):
        from ringrt.localsgd import DiLoCo
        from ringrt.optim import Adam

        model = MLP(SIZES, seed=rank, dtype=np.float64)
        diloco = DiLoCo(Adam(model.params, lr=1e-2), **options)
        grads = {k: np.zeros_like(v) for k, v in model.params.items()}
        first = 0
        if load_from is not None:
            extra = checkpoint.load(load_from, model.params, diloco)
            first = extra["step"]
        if isinstance(state_at, tuple):            # (step, state, params) to restore
            first, state, params = state_at
            for name, value in params.items():
                model.params[name][...] = value
            diloco.load_state_dict(state)
        for step in range(first, STEPS):
            _grads(model, step, rank, world_size, grads)
            diloco.step(grads)
            if step + 1 == RESUME_AT:
                diloco.consolidate()
                if stop_at == RESUME_AT:
                    checkpoint.save(ckpt_dir, model.params, diloco, extra={"step": step + 1})
                    return None
            if state_at == step + 1:
                return step + 1, diloco.state_dict(), {k: v.copy()
                                                        for k, v in model.params.items()}
        return dict(model.params)

    uninterrupted = run()
    run(stop_at=RESUME_AT)
    resumed = run(load_from=ckpt_dir)
    in_flight_at = RESUME_AT + options["sync_every"] // options["fragments"]  # a sync started
    state_resumed = run(state_at=run(state_at=in_flight_at))
    return {"uninterrupted": uninterrupted, "resumed": resumed, "state-resumed": state_resumed}


def residual_restart_case(rank, ckpt_dir):
    """The error-feedback checkpoint resume_case left, loaded as if another world size had
    saved it (its manifest edited): the residuals restart at zero, rank 0 warns once; and as
    saved, into a DiLoCo with another int8 chunk (the residuals do not fit: the same).
    ``load_per_rank_state_dict`` called directly refuses the other options."""
    import json
    import warnings

    import ringrt
    from ringrt import checkpoint
    from ringrt.localsgd import DiLoCo
    from ringrt.optim import Adam

    def load(**changes):
        model = MLP(SIZES, seed=rank, dtype=np.float64)
        diloco = DiLoCo(Adam(model.params, lr=1e-2), **dict(RESUME["int8-ef"], **changes))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            checkpoint.load(ckpt_dir, model.params, diloco)
        return diloco, [str(w.message) for w in caught]

    out = {}
    saved, warned = load()
    out["ef-restart/as-saved/warnings"] = warned
    out["ef-restart/as-saved/nonzero"] = bool(np.abs(saved.residual).max() > 0)
    other, warned = load(int8_chunk=32)
    out["ef-restart/chunk/warnings"] = warned
    out["ef-restart/chunk/zero"] = not np.any(other.residual)
    try:
        other.load_per_rank_state_dict(saved.per_rank_state_dict())
        out["ef-restart/refused"] = ""
    except ValueError as exc:
        out["ef-restart/refused"] = str(exc)
    ringrt.barrier()
    if rank == 0:
        path = Path(ckpt_dir) / (Path(ckpt_dir) / checkpoint.LATEST).read_text()
        manifest = json.loads((path / checkpoint.MANIFEST).read_text())
        manifest["world_size"] += 1
        (path / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    ringrt.barrier()
    resized, warned = load()
    out["ef-restart/resized/warnings"] = warned
    out["ef-restart/resized/zero"] = not np.any(resized.residual)
    return out


# --- two levels: ranks of a "host" (RINGRT_HOST_ID) average every step, hosts by DiLoCo ------

TWO_LEVEL_DILOCO = {"two-h4": {"sync_every": 4},
                    "two-h4-f2-bf16": {"sync_every": 4, "fragments": 2, "compress": "bf16"},
                    "two-h3-nodelay-int8": {"sync_every": 3, "delay": 0, "compress": "int8",
                                            "int8_chunk": 64}}
TWO_LEVEL_DDP = {"two-powersgd": {"compress": "powersgd", "powersgd_rank": 2},
                 "two-bf16": {"compress": "bf16"}}


def two_level_cases(rank: int, world_size: int) -> dict:
    """DDP(sync_every=H) with scope "hosts" and compressed DDP across hosts."""
    import ringrt

    ringrt.init_process_group()
    out = {"hosts": [list(h) for h in ringrt.distributed.resolve(None).layout.hosts]}
    for name, options in TWO_LEVEL_DILOCO.items():
        params = train_two_level(rank, world_size, options)
        out.update({f"{name}/{k}": v for k, v in params.items()})
    for name, options in TWO_LEVEL_DDP.items():
        out.update({f"{name}/{k}": v for k, v in train_ddp(rank, world_size, options).items()})
    ringrt.destroy_process_group()
    return out


def train_two_level(rank, world_size, options, steps=STEPS):
    from ringrt.ddp import DistributedDataParallel
    from ringrt.optim import SGD

    options = dict(options)
    model = MLP(SIZES, seed=rank, dtype=np.float64)
    ddp = DistributedDataParallel(model.params, sync_every=options.pop("sync_every"),
                                  scope="hosts")
    model.params = ddp.params
    diloco = ddp.wrap_optimizer(SGD(ddp.params, lr=INNER_LR), **options)
    for step in range(steps):
        _grads(model, step, rank, world_size, ddp.grads, ddp.grad_ready)
        ddp.sync()
        diloco.step(ddp.grads)
    return dict(model.params)


# --- compressed DDP through ringrt.checkpoint: the per-rank compressor state ---------------

COMPRESSED_RESUME = {"psgd": {"compress": "powersgd", "powersgd_rank": 2},
                     "bf16": {"compress": "bf16"}}
COMPRESSED_AT = 6


def _compressed_run(rank, world_size, options, ckpt_dir, stop_at=None, load=False,
                    until=STEPS):
    """Compressed DDP + Adam up to step ``until``, checkpointed as examples/train.py does
    (``checkpoint.save(dir, ddp.params, optimizer)``): stop after ``stop_at`` with a
    checkpoint, or (``load``) start from the checkpoint. Returns (params, ddp)."""
    from ringrt import checkpoint
    from ringrt.ddp import DistributedDataParallel
    from ringrt.optim import Adam

    model = MLP(SIZES, seed=rank, dtype=np.float64)
    ddp = DistributedDataParallel(model.params, **options)
    model.params = ddp.params
    optimizer = Adam(ddp.params, lr=1e-2)
    first = checkpoint.load(ckpt_dir, model.params, optimizer)["step"] if load else 0
    for step in range(first, until):
        _grads(model, step, rank, world_size, ddp.grads, ddp.grad_ready)
        ddp.sync()
        optimizer.step(ddp.grads)
        if step + 1 == stop_at:
            checkpoint.save(ckpt_dir, model.params, optimizer, extra={"step": step + 1})
            break
    return dict(model.params), ddp


def compressed_resume_case(rank, ckpt_dir, options):
    """Uninterrupted vs stopped at COMPRESSED_AT with a checkpoint and resumed from it."""
    import ringrt

    world_size = ringrt.get_world_size()
    uninterrupted, _ = _compressed_run(rank, world_size, options, ckpt_dir)
    _compressed_run(rank, world_size, options, ckpt_dir, stop_at=COMPRESSED_AT)
    resumed, _ = _compressed_run(rank, world_size, options, ckpt_dir, load=True)
    return {"uninterrupted": uninterrupted, "resumed": resumed}


def old_checkpoint_case(rank, ckpt_dir):
    """A PowerSGD checkpoint as ringrt wrote it before DDP state was saved (the manifest
    without its "ddp" entry, no ddp-r* files) still loads: parameters and optimizer as
    saved, the compressor restarted as a new DDP's, one RuntimeWarning on rank 0."""
    import json
    import os
    import warnings

    import ringrt
    from ringrt import checkpoint

    world_size, options = ringrt.get_world_size(), COMPRESSED_RESUME["psgd"]
    saved, ddp = _compressed_run(rank, world_size, options, ckpt_dir, stop_at=COMPRESSED_AT)
    trained_state = ddp.state_dict()
    if rank == 0:
        path = Path(ckpt_dir) / (Path(ckpt_dir) / checkpoint.LATEST).read_text()
        manifest = json.loads((path / checkpoint.MANIFEST).read_text())
        assert manifest.pop("ddp") == {"options": options}
        (path / checkpoint.MANIFEST).write_text(json.dumps(manifest))
        for name in os.listdir(path):
            if name.startswith("ddp-r"):
                os.unlink(path / name)
    ringrt.barrier()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded, ddp = _compressed_run(rank, world_size, options, ckpt_dir, load=True,
                                      until=COMPRESSED_AT)
    fresh = _compressed_run(rank, world_size, options, ckpt_dir, until=0)[1].state_dict()
    continued, _ = _compressed_run(rank, world_size, options, ckpt_dir, load=True)
    return {"old/warnings": [str(w.message) for w in caught],
            "old/restarted": _same_state(ddp.state_dict(), fresh),
            "old/trained-state-differs": not _same_state(trained_state, fresh),
            **{f"old-saved/{k}": v for k, v in saved.items()},
            **{f"old-loaded/{k}": v for k, v in loaded.items()},
            **{f"old-continued/{k}": v for k, v in continued.items()}}


def _same_state(a: dict, b: dict) -> bool:
    return a["options"] == b["options"] and all(
        a[key].keys() == b[key].keys()
        and all(np.array_equal(a[key][n], b[key][n]) for n in a[key]) for key in ("q", "error"))


def other_options_case(rank, ckpt_dir):
    """The PowerSGD checkpoint loaded into a DDP of another rank r (the state restarts, rank 0
    warns) and into an uncompressed one (nothing to restore, no warning); DDP's own
    load_state_dict refuses the other options."""
    import warnings

    import ringrt

    world_size, out = ringrt.get_world_size(), {}
    for name, options in {"rank1": {"compress": "powersgd", "powersgd_rank": 1},
                          "plain": {}}.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ddp = _compressed_run(rank, world_size, options, ckpt_dir, load=True,
                                  until=COMPRESSED_AT)[1]
        out[f"other/{name}/warnings"] = [str(w.message) for w in caught]
    saved = _compressed_run(rank, world_size, COMPRESSED_RESUME["psgd"], ckpt_dir,
                            until=0)[1].state_dict()
    try:
        ddp.load_state_dict(saved)
        out["other/refused"] = ""
    except ValueError as exc:
        out["other/refused"] = str(exc)
    return out
