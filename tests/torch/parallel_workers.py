"""Rank-side runs for tests/torch/test_parallel.py: torch's parallel styles, each run twice in
one job -- on meshes and groups of the "ringrt" default group, and on gloo ones over the same
ranks (``backend_override``) -- on examples/torch_gpt.py's model, plus (rank 0) the
single-process run on the whole batch that every style must reproduce.

World 2: DTensor on a 1-D mesh, FSDP2, tensor parallel (with and without sequence parallel),
a two-stage pipeline. World 4 (2x2 mesh): DTensor on the 2-D mesh, FSDP2 over 4, HSDP,
FSDP2 x tensor/sequence parallel, two-stage pipelines x data parallel, monitored_barrier.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import ringrt.torch  # noqa: F401 - registers the backend
from examples.torch_gpt import GPTConfig, build, loss_of, tensor_parallel

CFG = GPTConfig(vocab=40, context=8, dim=32, heads=4, layers=2)
STEPS, BATCH, LR = 3, 8, 1e-2


def batch(step: int):
    generator = torch.Generator().manual_seed(50 + step)
    window = torch.randint(0, CFG.vocab, (BATCH, CFG.context + 1), generator=generator)
    return window[:, :-1], window[:, 1:]


def full_params(model) -> torch.Tensor:
    """Every parameter, gathered (DTensors) and flattened in registration order."""
    flat = []
    for p in model.parameters():
        p = p.full_tensor() if hasattr(p, "full_tensor") else p
        flat.append(p.detach().reshape(-1))
    return torch.cat(flat).clone()


def train(model, part: int = 0, parts: int = 1, sync=None) -> torch.Tensor:
    """STEPS AdamW steps on rows ``part`` of ``parts`` of each batch; ``sync(model)`` between
    backward and step (data parallelism done by hand)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    rows = slice(part * BATCH // parts, (part + 1) * BATCH // parts)
    for step in range(STEPS):
        x, y = batch(step)
        optimizer.zero_grad()
        loss_of(model, x[rows], y[rows]).backward()
        if sync is not None:
            sync(model)
        optimizer.step()
    return full_params(model)


def mesh(shape, names, backend):
    override = {} if backend == "ringrt" else {name: backend for name in names}
    return init_device_mesh("cpu", shape, mesh_dim_names=names, backend_override=override)


# -- styles: each returns the final parameters (or values) of one run ------------------------

def dtensor(world: int, backend: str) -> dict:
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    shape, names = ((2, 2), ("a", "b")) if world == 4 else ((2,), ("a",))
    device_mesh = mesh(shape, names, backend)
    a = torch.arange(48.0).reshape(8, 6)
    b = torch.arange(24.0).reshape(6, 4) / 8
    da = distribute_tensor(a, device_mesh, [Shard(0)] + [Shard(1)] * (len(shape) - 1))
    db = distribute_tensor(b, device_mesh, [Replicate()] * len(shape))
    product = (da @ db).full_tensor()
    moved = da.redistribute(device_mesh, [Shard(1)] + [Replicate()] * (len(shape) - 1))
    return {"product": product.numpy(), "total": (da.sum()).full_tensor().numpy(),
            "moved": moved.full_tensor().numpy()}


def fsdp2(world: int, backend: str) -> dict:
    from torch.distributed.fsdp import fully_shard

    device_mesh = mesh((world,), ("dp",), backend)
    model = build(CFG)
    for block in model.blocks:
        fully_shard(block, mesh=device_mesh)
    fully_shard(model, mesh=device_mesh)
    return {"params": train(model, dist.get_rank(), world).numpy()}


def hsdp(world: int, backend: str) -> dict:
    from torch.distributed.fsdp import fully_shard

    device_mesh = mesh((2, world // 2), ("replicate", "shard"), backend)
    model = build(CFG)
    for block in model.blocks:
        fully_shard(block, mesh=device_mesh)
    fully_shard(model, mesh=device_mesh)
    return {"params": train(model, dist.get_rank(), world).numpy()}


def tensor_parallel_only(world: int, backend: str) -> dict:
    model = tensor_parallel(build(CFG), mesh((2,), ("tp",), backend)["tp"])
    return {"params": train(model).numpy()}


def sequence_parallel(world: int, backend: str) -> dict:
    model = tensor_parallel(build(CFG), mesh((2,), ("tp",), backend)["tp"],
                            sequence_parallel=True)
    return {"params": train(model).numpy()}


def fsdp_tensor_parallel(world: int, backend: str) -> dict:
    """examples/torch_gpt.py's layout: FSDP2 over "dp" x tensor/sequence parallel over "tp"."""
    from torch.distributed.fsdp import fully_shard

    device_mesh = mesh((2, 2), ("dp", "tp"), backend)
    model = tensor_parallel(build(CFG), device_mesh["tp"], sequence_parallel=True)
    for block in model.blocks:
        fully_shard(block, mesh=device_mesh["dp"])
    fully_shard(model, mesh=device_mesh["dp"])
    return {"params": train(model, device_mesh["dp"].get_local_rank(), 2).numpy()}


class _Stage(torch.nn.Module):
    """One pipeline stage of the GPT: embed + first block, or last block + norm + head."""

    def __init__(self, model, first: bool):
        super().__init__()
        self.first = first
        if first:
            self.embed, self.block = model.embed, model.blocks[0]
        else:
            self.block, self.norm, self.head = model.blocks[1], model.norm, model.head

    def forward(self, x):
        if self.first:
            return self.block(self.embed(x))
        return self.head(self.norm(self.block(x)))


def pipeline(world: int, backend: str) -> dict:
    """Two stages (point-to-point between them), two microbatches (GPipe); at world 4 two
    such pipelines, their gradients averaged over "dp"."""
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    device_mesh = mesh((world // 2, 2), ("dp", "pp"), backend)
    stage_index = device_mesh["pp"].get_local_rank()
    dp_rank, dp_group = device_mesh["dp"].get_local_rank(), device_mesh["dp"].get_group()
    module = _Stage(build(CFG), first=stage_index == 0)
    stage = PipelineStage(module, stage_index, 2, torch.device("cpu"),
                          group=device_mesh["pp"].get_group())

    def loss_fn(logits, y):
        return torch.nn.functional.cross_entropy(logits.reshape(-1, CFG.vocab), y.reshape(-1))

    schedule = ScheduleGPipe(stage, n_microbatches=2, loss_fn=loss_fn)
    optimizer = torch.optim.AdamW(module.parameters(), lr=LR)
    parts = world // 2
    rows = slice(dp_rank * BATCH // parts, (dp_rank + 1) * BATCH // parts)
    for step in range(STEPS):
        x, y = batch(step)
        optimizer.zero_grad()
        if stage_index == 0:
            schedule.step(x[rows])
        else:
            schedule.step(target=y[rows])
        if parts > 1:
            for p in module.parameters():
                dist.all_reduce(p.grad, group=dp_group)
                p.grad /= parts
        optimizer.step()
    # the whole model's parameters, in the single-process model's order: stage 0's then 1's
    whole = build(CFG)
    pieces = [torch.cat([p.detach().reshape(-1) for p in _Stage(whole, i == 0).parameters()])
              for i in range(2)]
    pieces[stage_index] = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    for i, piece in enumerate(pieces):
        dist.broadcast(piece, group_src=i, group=device_mesh["pp"].get_group())
    return {"params": torch.cat(pieces).numpy()}


def single_process_pipeline_order() -> torch.Tensor:
    model = build(CFG)
    train(model)
    stages = [_Stage(model, True), _Stage(model, False)]
    return torch.cat([p.detach().reshape(-1) for s in stages for p in s.parameters()])


def monitored_barrier(world: int, backend: str) -> dict:
    """All arrive; the last rank stays away; with wait_all_ranks the last two stay away.
    Each case on a fresh group (a failed monitored barrier leaves its group unusable)."""
    out = {}
    rank = dist.get_rank()
    everyone = dist.new_group(backend=backend)
    dist.monitored_barrier(everyone, timeout=timedelta(seconds=20))
    out["all_arrived"] = True
    for case, away, wait_all in (("one_away", {world - 1}, False),
                                 ("two_away", {world - 2, world - 1}, True)):
        group = dist.new_group(backend=backend)
        if rank not in away:
            try:
                dist.monitored_barrier(group, timeout=timedelta(seconds=1),
                                       wait_all_ranks=wait_all)
                out[case] = "passed"
            except RuntimeError as exc:
                out[case] = str(exc).split("\n")[0][:300]
        dist.barrier()            # on the default group: everyone rejoins
    return out


def split_group(world: int, backend: str) -> dict:
    try:
        dist.split_group(split_ranks=[[0, 1], [2, 3]][: world // 2])
        return {"error": ""}
    except RuntimeError as exc:
        return {"error": str(exc)[:200]}


STYLES = {2: [dtensor, fsdp2, tensor_parallel_only, sequence_parallel, pipeline],
          4: [dtensor, fsdp2, hsdp, fsdp_tensor_parallel, pipeline, monitored_barrier]}


def parallel_tour(rank: int, world: int) -> dict:
    dist.init_process_group("ringrt")
    out = {}
    for style in STYLES[world]:
        for backend in ("ringrt", "gloo"):
            for key, value in style(world, backend).items():
                out[f"{style.__name__}/{backend}/{key}"] = value
    out["split_group/error"] = split_group(world, "ringrt")["error"]
    if rank == 0:
        model = build(CFG)
        out["single/params"] = train(model).numpy()
        out["single/pipeline_params"] = single_process_pipeline_order().numpy()
    dist.barrier()
    dist.destroy_process_group()
    return out
