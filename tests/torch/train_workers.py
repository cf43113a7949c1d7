"""Rank-side training runs for tests/torch/test_training.py: the same few steps of the same
model under DDP (several configurations), ZeroRedundancyOptimizer and FSDP, once over the
"ringrt" default group and once over a gloo group of the same ranks, plus (rank 0) the
single-process run on the whole batch that data parallelism must reproduce."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel as DDP

import ringrt.torch  # noqa: F401 - registers the backend

STEPS = 3
GLOBAL_BATCH = 8
LR = 0.05


class Net(nn.Module):
    """A small CNN on 8x8 single-channel images; ``skip`` leaves its ``side`` branch unused
    (what DDP's find_unused_parameters is for)."""

    def __init__(self, skip: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 10)
        self.side = nn.Linear(32, 10)
        self.skip = skip

    def forward(self, x):
        hidden = torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1)))
        out = self.fc2(hidden)
        return out if self.skip else out + self.side(hidden)


def batch(step: int):
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 1, 8, 8, generator=generator)
    y = torch.randint(0, 10, (GLOBAL_BATCH,), generator=generator)
    return x, y


def shard(tensor, rank: int, world: int):
    per_rank = GLOBAL_BATCH // world
    return tensor[rank * per_rank:(rank + 1) * per_rank]


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def fresh_model(skip: bool = False) -> Net:
    torch.manual_seed(0)
    return Net(skip)


def single_process(steps: int = STEPS, micro: int = 1, skip: bool = False,
                   momentum: float = 0.0) -> torch.Tensor:
    """The reference: the whole global batch in one process, SGD."""
    model = fresh_model(skip)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=momentum)
    for step in range(steps):
        optimizer.zero_grad()
        for m in range(micro):
            x, y = batch(step * micro + m)
            (nn.functional.cross_entropy(model(x), y) / micro).backward()
        optimizer.step()
    return flat_params(model)


def ddp_run(rank, world, group, hook=None, micro=1, skip=False, **ddp_options) -> torch.Tensor:
    """STEPS steps of DDP + SGD; with ``micro`` > 1, gradient accumulation under no_sync."""
    model = DDP(fresh_model(skip), process_group=group, **ddp_options)
    if hook is not None:
        model.register_comm_hook(*hook(group))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        optimizer.zero_grad()
        for m in range(micro):
            x, y = batch(step * micro + m)
            loss = nn.functional.cross_entropy(model(shard(x, rank, world)),
                                               shard(y, rank, world)) / micro
            if m < micro - 1:
                with model.no_sync():
                    loss.backward()
            else:
                loss.backward()
        optimizer.step()
    return flat_params(model.module)


def zero_run(rank, world, group) -> torch.Tensor:
    """DDP with torch's ZeroRedundancyOptimizer (SGD state sharded over the group)."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = DDP(fresh_model(), process_group=group)
    train_steps(model, rank, world, ZeroRedundancyOptimizer(
        model.parameters(), torch.optim.SGD, process_group=group, lr=LR, momentum=0.9))
    return flat_params(model.module)


def fsdp_run(rank, world, group) -> torch.Tensor:
    """FSDP2 (``fully_shard``) on CPU: parameters sharded, all-gathered and reduce-scattered
    through the group; the full parameters are gathered at the end."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard

    mesh = DeviceMesh.from_group(group or dist.group.WORLD, "cpu")
    model = fresh_model()
    for layer in (model.conv, model.fc1, model.fc2, model.side):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    train_steps(model, rank, world)
    return torch.cat([p.full_tensor().detach().reshape(-1) for p in model.parameters()])


def bf16_hook(group, bucket):
    """torch's bf16_compress_hook without its CUDA-only check: bucket all-reduced as
    bfloat16, then decompressed in place (a future chained on ringrt's)."""
    buffer = bucket.buffer()
    compressed = buffer.to(torch.bfloat16).div_(dist.get_world_size(group))
    future = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(fut):
        buffer.copy_(fut.value()[0])
        return buffer
    return future.then(decompress)


def fsdp1_run(rank, world, group) -> torch.Tensor:
    """FSDP1 (``FullyShardedDataParallel``, FULL_SHARD) on CPU; full parameters at the end."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = FSDP(fresh_model(), process_group=group, device_id=torch.device("cpu"),
                 use_orig_params=True)
    train_steps(model, rank, world)
    with FSDP.summon_full_params(model):
        return flat_params(model.module)


def powersgd(group):
    state = powerSGD_hook.PowerSGDState(process_group=group, matrix_approximation_rank=1,
                                        start_powerSGD_iter=2, use_error_feedback=True,
                                        warm_start=False)
    return state, powerSGD_hook.powerSGD_hook


VARIANTS = {
    "ddp": lambda r, w, g: ddp_run(r, w, g, bucket_cap_mb=0.01),       # several buckets
    "ddp_no_sync": lambda r, w, g: ddp_run(r, w, g, micro=2),
    "ddp_grad_view": lambda r, w, g: ddp_run(r, w, g, gradient_as_bucket_view=True,
                                             bucket_cap_mb=0.01),
    "ddp_unused": lambda r, w, g: ddp_run(r, w, g, skip=True, find_unused_parameters=True),
    "ddp_static_graph": lambda r, w, g: ddp_run(r, w, g, static_graph=True),
    "ddp_allreduce_hook": lambda r, w, g: ddp_run(
        r, w, g, hook=lambda grp: (grp, default_hooks.allreduce_hook)),
    "ddp_fp16_hook": lambda r, w, g: ddp_run(
        r, w, g, hook=lambda grp: (grp, default_hooks.fp16_compress_hook)),
    "ddp_bf16_hook": lambda r, w, g: ddp_run(r, w, g, hook=lambda grp: (grp, bf16_hook)),
    "ddp_powersgd": lambda r, w, g: ddp_run(r, w, g, hook=powersgd),
    "zero": zero_run,
    "fsdp": fsdp_run,
    "fsdp1": fsdp1_run,
}


def train_everything(rank: int, world: int) -> dict:
    """Each variant over ringrt and over gloo; rank 0 adds the single-process references."""
    dist.init_process_group("ringrt")
    gloo = dist.new_group(backend="gloo")
    out = {}
    for name, run in VARIANTS.items():
        for backend, group in (("ringrt", None), ("gloo", gloo)):
            try:
                out[f"{backend}/{name}"] = run(rank, world, group).numpy()
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                out[f"{backend}-failed/{name}"] = f"{type(exc).__name__}: {exc}"[:2000]
                raise
    if rank == 0:
        out["single"] = single_process().numpy()
        out["single_micro"] = single_process(micro=2).numpy()
        out["single_skip"] = single_process(skip=True).numpy()
        out["single_momentum"] = single_process(momentum=0.9).numpy()
    dist.barrier()
    dist.destroy_process_group()
    return out


def train_steps(model, rank: int, world: int, optimizer=None) -> None:
    """STEPS of ``optimizer`` (default: SGD) on this rank's shard of every global batch."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        optimizer.zero_grad()
        x, y = batch(step)
        nn.functional.cross_entropy(model(shard(x, rank, world)), shard(y, rank, world)) \
            .backward()
        optimizer.step()

