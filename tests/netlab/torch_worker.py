"""Rank-side script of the netlab torch test: torch.distributed over the "ringrt" backend on
three lab hosts (started by ``ringrun`` on each). Checks collectives, a subgroup that spans
hosts, and torch DDP against a one-process reference; writes ``rank{R}.json`` and ``pid{R}``
to ``$NETLAB_TEST_OUT``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import ringrt.torch  # noqa: F401 - registers the backend

OUT = Path(os.environ["NETLAB_TEST_OUT"])
STEPS, BATCH = 5, 24


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 16, generator=generator), torch.randint(0, 4, (BATCH,),
                                                                      generator=generator)


def train(net: nn.Module, rank: int, world: int) -> nn.Module:
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(STEPS):
        x, y = batch(step)
        x, y = x[rank::world], y[rank::world]
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net


def main() -> None:
    (OUT / f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
    dist.init_process_group("ringrt")
    rank, world = dist.get_rank(), dist.get_world_size()
    failures = []
    x = torch.full((1000,), float(rank + 1))
    dist.all_reduce(x)
    if not bool((x == world * (world + 1) / 2).all()):
        failures.append("all_reduce")
    big = torch.arange(300_000, dtype=torch.float32) + rank
    gathered = [torch.empty_like(big) for _ in range(world)]
    dist.all_gather(gathered, big)
    if any(not torch.equal(t, torch.arange(300_000, dtype=torch.float32) + r)
           for r, t in enumerate(gathered)):
        failures.append("all_gather")
    ends = dist.new_group([0, world - 1], backend="ringrt")      # first and last host
    if rank in (0, world - 1):
        y = torch.tensor([float(rank)])
        dist.all_reduce(y, group=ends)
        if y.item() != world - 1:
            failures.append("subgroup all_reduce")
    ddp = nn.parallel.DistributedDataParallel(model())
    train(ddp, rank, world)
    reference = train(model(), 0, 1)          # the whole batch in one process
    for got, want in zip(ddp.module.parameters(), reference.parameters(), strict=True):
        if not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
            failures.append("ddp vs one process")
            break
    flat = torch.cat([p.detach().reshape(-1) for p in ddp.module.parameters()])
    replicas = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(replicas, flat)
    if any(not torch.equal(r, flat) for r in replicas):
        failures.append("ddp replicas differ")
    stats = ringrt.stats()
    (OUT / f"rank{rank}.json").write_text(json.dumps({
        "failures": failures, "tcp_mechanism": stats["transport"]["tcp_mechanism"],
        "routes": stats["transport"]["routes"]}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
