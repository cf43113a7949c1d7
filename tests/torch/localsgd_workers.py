"""Rank-side runs for tests/torch/test_localsgd.py: DiLoCo (ringrt.torch.localsgd) in several
configurations over the "ringrt" backend, a single-process simulation of the same algorithm
written independently here (rank 0), and torch's own DDP comm hooks (bf16_compress_hook,
PowerSGD) over "ringrt" and over gloo in the same job."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
from torch.nn.parallel import DistributedDataParallel as DDP

import ringrt.torch  # noqa: F401 - registers the backend
from ringrt.torch.comm_hooks import bf16_hook
from ringrt.torch.localsgd import DiLoCo

STEPS, PER_RANK, LR = 12, 4, 0.01
# The test model's parameters: W1 (512 values), b1, W2, b2. Two fragments of about equal
# size are [W1] and [b1, W2, b2].
FRAGMENTS_OF_TWO = [[0], [1, 2, 3]]

CASES = {   # name -> DiLoCo options
    "plain": dict(sync_every=4, overlap=False),
    "overlap": dict(sync_every=4),
    "fragments": dict(sync_every=4, fragments=2),
    "bf16": dict(sync_every=4, compress="bf16"),
    "int8": dict(sync_every=4, compress="int8", overlap=False, outer_momentum=0.5,
                 nesterov=False),
    "int8-ef": dict(sync_every=4, fragments=2, compress="int8", error_feedback=True),
    "bf16-ef": dict(sync_every=4, compress="bf16", error_feedback=True, overlap=False),
}


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))


def batch(step: int, size: int):
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(size, 16, generator=generator), torch.randint(0, 4, (size,),
                                                                     generator=generator)


def local_batch(step: int, rank: int, world: int):
    x, y = batch(step, PER_RANK * world)
    return x[rank * PER_RANK:(rank + 1) * PER_RANK], y[rank * PER_RANK:(rank + 1) * PER_RANK]


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


# -- the runs under test -----------------------------------------------------------------------

def diloco_run(rank: int, world: int, options: dict, steps: int = STEPS,
               resume_at: int | None = None) -> torch.Tensor:
    """``steps`` steps of DiLoCo + AdamW; with ``resume_at``, everything is checkpointed
    there and the run continues in fresh objects loaded from the checkpoint."""
    model = fresh_model()
    if rank:                                  # DiLoCo must broadcast rank 0's parameters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    diloco = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=LR), **options)
    for step in range(steps):
        if step == resume_at:
            diloco = restored(diloco, options)
        diloco.inner.zero_grad()
        x, y = local_batch(step, rank, world)
        nn.functional.cross_entropy(diloco.model(x), y).backward()
        diloco.step()
    return flat(diloco.model)


def consolidated(rank: int, world: int) -> dict:
    """Six steps with error feedback (an outer step pending), then ``finish`` and
    ``consolidate``: the parameters before it (finished), after it, and Adam's first moment
    after it; and the residuals, which stay this rank's."""
    model = fresh_model()
    diloco = DiLoCo(model, torch.optim.AdamW(model.parameters(), lr=LR), **CASES["int8-ef"])
    for step in range(6):
        diloco.inner.zero_grad()
        x, y = local_batch(step, rank, world)
        nn.functional.cross_entropy(diloco.model(x), y).backward()
        diloco.step()
    diloco.finish()
    before, residual = flat(model), torch.cat(diloco.state_dict()["residual"])
    diloco.consolidate()
    moments = torch.cat([diloco.inner.state[p]["exp_avg"].reshape(-1)
                         for p in model.parameters()])
    return {"consolidate/before": before.numpy(), "consolidate/after": flat(model).numpy(),
            "consolidate/exp_avg": moments.numpy(),
            "consolidate/global": torch.cat(diloco.state_dict()["global"]).numpy(),
            "consolidate/residual-before": residual.numpy(),
            "consolidate/residual-after": torch.cat(diloco.state_dict()["residual"]).numpy()}


def restored(diloco: DiLoCo, options: dict) -> DiLoCo:
    """A new model, optimizer and DiLoCo loaded from ``diloco``'s state dicts."""
    saved = ({k: v.clone() for k, v in _module(diloco.model).state_dict().items()},
             diloco.inner.state_dict(), diloco.state_dict())
    model = fresh_model()
    inner = torch.optim.AdamW(model.parameters(), lr=LR)
    fresh = DiLoCo(model, inner, **options)
    _module(fresh.model).load_state_dict(saved[0])
    inner.load_state_dict(saved[1])
    fresh.load_state_dict(saved[2])
    return fresh


def _module(model):
    return model.module if isinstance(model, DDP) else model


# -- the reference: the same algorithm, every replica in one process -----------------------------

def simulate(replica_ranks: list[list[int]], world: int, sync_every: int, fragments: int = 1,
             overlap: bool = True, compress: str | None = None, outer_lr: float = 0.7,
             outer_momentum: float = 0.9, nesterov: bool = True, steps: int = STEPS,
             error_feedback: bool = False):
    """DiLoCo with one replica per entry of ``replica_ranks`` (the ranks whose batches it
    trains on, as DDP inside a host does); returns each replica's final flat parameters.
    With ``error_feedback`` each replica adds to a fragment's pseudo-gradient what rounding
    took from its last one."""
    models = [fresh_model() for _ in replica_ranks]
    inners = [torch.optim.AdamW(m.parameters(), lr=LR) for m in models]
    groups = FRAGMENTS_OF_TWO if fragments == 2 else [[0, 1, 2, 3]]
    frag_params = [[[list(m.parameters())[i] for i in g] for g in groups] for m in models]
    glob = [torch.cat([p.detach().reshape(-1) for p in ps]).clone() for ps in frag_params[0]]
    momentum = [torch.zeros_like(g) for g in glob]
    owed = [[torch.zeros_like(g) for g in glob] for _ in models]     # [replica][fragment]
    pending = None

    def apply(fragment, snapshots, average):
        momentum[fragment] = outer_momentum * momentum[fragment] + average
        update = average + outer_momentum * momentum[fragment] if nesterov \
            else momentum[fragment]
        glob[fragment] = glob[fragment] - outer_lr * update
        for replica, snapshot in enumerate(snapshots):
            offset = 0
            for p in frag_params[replica][fragment]:
                n = p.numel()
                with torch.no_grad():
                    p.copy_((glob[fragment][offset:offset + n] + p.reshape(-1)
                             - snapshot[offset:offset + n]).view_as(p))
                offset += n

    for step in range(steps):
        for model, inner, ranks in zip(models, inners, replica_ranks, strict=True):
            inner.zero_grad()
            batches = [local_batch(step, r, world) for r in ranks]
            x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
            nn.functional.cross_entropy(model(x), y).backward()
            inner.step()
        if pending is not None:
            apply(*pending)
            pending = None
        interval = sync_every // fragments
        if (step + 1) % interval == 0:
            f = ((step + 1) // interval - 1) % fragments
            snapshots = [torch.cat([p.detach().reshape(-1) for p in fp[f]]).clone()
                         for fp in frag_params]
            deltas = [glob[f] - s for s in snapshots]
            if error_feedback:
                deltas = [d + owed[r][f] for r, d in enumerate(deltas)]
                for r, d in enumerate(deltas):
                    owed[r][f] = d - rounded(d, compress)
            pending = (f, snapshots, average_of(deltas, compress))
            if not overlap:
                apply(*pending)
                pending = None
    return [flat(m) for m in models]


def average_of(deltas: list[torch.Tensor], compress: str | None) -> torch.Tensor:
    n = len(deltas)
    if compress == "bf16":
        total = sum(d.to(torch.bfloat16) / n for d in deltas)
        return total.float()
    if compress == "int8":
        return sum(int8_decoded(d) for d in deltas) / n
    return sum(d / n for d in deltas)


def rounded(values: torch.Tensor, compress: str) -> torch.Tensor:
    """What one replica's message carries of ``values``."""
    return values.to(torch.bfloat16).float() if compress == "bf16" else int8_decoded(values)


def int8_decoded(values: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Round each value to the nearest of 255 levels of its block's largest magnitude."""
    out = torch.empty_like(values)
    for start in range(0, values.numel(), block):
        chunk = values[start:start + block]
        scale = chunk.abs().max() / 127
        out[start:start + block] = torch.round(chunk / scale) * scale
    return out


# -- torch's DDP comm hooks ---------------------------------------------------------------------

def hook_run(rank: int, world: int, group, hook: str) -> torch.Tensor:
    """8 steps of DDP + SGD with torch's own ``hook`` on a model with matrices worth
    compressing (PowerSGD: rank 2, error feedback, warm start, compressing from step 3)."""
    torch.manual_seed(1)
    model = DDP(nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                              nn.Linear(32, 4)), process_group=group)   # one bucket: see the docs
    if hook == "bf16":
        model.register_comm_hook(group, bf16_hook)       # torch's, renamed: see comm_hooks
    else:
        state = powerSGD_hook.PowerSGDState(process_group=group, matrix_approximation_rank=2,
                                            start_powerSGD_iter=3, random_seed=7)
        model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(8):
        optimizer.zero_grad()
        x, y = local_batch(step, rank, world)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return flat(model.module)


# -- the worlds ---------------------------------------------------------------------------------

def single_level(rank: int, world: int) -> dict:
    """Every DiLoCo case across all ranks, a resumed run, and (world 2) torch's hooks over
    ringrt and gloo; rank 0 adds the simulated references."""
    dist.init_process_group("ringrt")
    out = {name: diloco_run(rank, world, options).numpy() for name, options in CASES.items()}
    out["resumed"] = diloco_run(rank, world, CASES["fragments"], resume_at=6).numpy()
    out["resumed-ef"] = diloco_run(rank, world, CASES["int8-ef"], resume_at=6).numpy()
    out.update(consolidated(rank, world))
    if world == 2:
        gloo = dist.new_group(backend="gloo")
        for hook in ("bf16", "powersgd"):
            out[f"ringrt/{hook}"] = hook_run(rank, world, None, hook).numpy()
            out[f"gloo/{hook}"] = hook_run(rank, world, gloo, hook).numpy()
    if rank == 0:
        replicas = [[r] for r in range(world)]
        for name, options in CASES.items():
            for r, params in enumerate(simulate(replicas, world, **options)):
                out[f"reference/{name}/{r}"] = params.numpy()
        without = dict(CASES["int8-ef"], error_feedback=False)
        for r, params in enumerate(simulate(replicas, world, **without)):
            out[f"reference/int8-ef-off/{r}"] = params.numpy()
    dist.barrier()
    dist.destroy_process_group()
    return out


def two_level(rank: int, world: int, hosts: list[list[int]]) -> dict:
    """DiLoCo with two_level=True (ranks claim hosts through RINGRT_HOST_ID); rank 0 adds
    the reference: one replica per host, trained on its ranks' batches."""
    dist.init_process_group("ringrt")
    options = dict(sync_every=4, fragments=2, two_level=True)
    out = {"two_level": diloco_run(rank, world, options).numpy()}
    with_ef = dict(options, compress="int8", error_feedback=True)
    out["two_level_ef"] = diloco_run(rank, world, with_ef).numpy()
    if rank == 0:
        for h, params in enumerate(simulate(hosts, world, sync_every=4, fragments=2)):
            out[f"reference/{h}"] = params.numpy()
        for h, params in enumerate(simulate(hosts, world, sync_every=4, fragments=2,
                                            compress="int8", error_feedback=True)):
            out[f"reference-ef/{h}"] = params.numpy()
    dist.barrier()
    dist.destroy_process_group()
    return out

