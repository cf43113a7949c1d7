"""A plain torch DDP script, as people launch it with torchrun, srun, mpirun or a
Kubernetes operator: ``python ddp_train.py --backend ringrt --out params.npz``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import (  # noqa: E402
    LR, STEPS, make_model, save_params, shard, torch_env_from_launcher, use_backend)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="ringrt")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch_env_from_launcher()
    dist.init_process_group(use_backend(args.backend))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    model = DDP(make_model())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = shard(rank, world_size)
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    if rank == 0:
        save_params(dict(model.module.named_parameters()), args.out)
    assert dist.get_backend() == args.backend, dist.get_backend()
    print(f"recipe: rank {rank} of {world_size} done over {dist.get_backend()}", flush=True)
    dist.barrier()           # no rank tears down while a peer still uses its connections
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
