"""Under ``ringrun --max-restarts 1``: torch over "ringrt"; rank 1 dies after the first
all_reduce of attempt 0, attempt 1 runs to the end and prints its result."""

import os

import torch
import torch.distributed as dist

import ringrt.torch  # noqa: F401 - registers the backend

attempt = int(os.environ["RINGRT_RESTART_COUNT"])
dist.init_process_group("ringrt")
rank, world = dist.get_rank(), dist.get_world_size()
x = torch.full((1000,), float(rank + 1))
dist.all_reduce(x)
if attempt == 0 and rank == 1:
    raise SystemExit(3)
y = torch.full((4,), float(attempt))
dist.all_reduce(y)
print(f"attempt {attempt} rank {rank} sums {x[0].item():g} {y[0].item():g}", flush=True)
dist.destroy_process_group()
