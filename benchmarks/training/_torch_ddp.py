"""torch's own DDP on gloo, on train_step's MLP and batch, inside a ringrun job.

``benchmarks/training/train_step.py`` calls :func:`open_gloo` once (every rank) and
:func:`run_case` per world and bucket size, right after ringrt's cases at that world, so both
are measured in the same job on the same machine. torch runs one thread per rank
(``torch.set_num_threads(1)``), as torchrun does; the model is
``benchmarks.torch.train_step.mlp`` (the same widths), Adam at lr 1e-4 as ringrt's cases,
synthetic batches of the same shape.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time

import numpy as np

import ringrt as dist

BUCKET_CAPS_MB = (1.0, 25.0)          # train_step's buckets and torch's default


def available() -> bool:
    return importlib.util.find_spec("torch") is not None


def open_gloo() -> str:
    """Start torch.distributed on gloo with every rank of the ringrt world (a FileStore whose
    path rank 0 picks); returns the path (rank 0 removes it in :func:`close`)."""
    import torch
    import torch.distributed as tdist

    torch.set_num_threads(1)
    path = [os.path.join(tempfile.mkdtemp(prefix="ringrt-train-step-"), "gloo-store")
            if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(path, src=0)
    store = tdist.FileStore(path[0], dist.get_world_size())
    tdist.init_process_group("gloo", store=store, rank=dist.get_rank(),
                             world_size=dist.get_world_size())
    return path[0]


def close(path: str) -> None:
    import torch.distributed as tdist

    tdist.destroy_process_group()
    if dist.get_rank() == 0:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(os.path.dirname(path))


def new_group(size: int):
    """torch's group of ranks 0..size-1 (every rank must call it, in the same order); the
    default group when that is the whole world."""
    import torch.distributed as tdist

    return None if size == dist.get_world_size() else tdist.new_group(list(range(size)))


def run_case(group, ringrt_group, widths, batch: int, steps: int, warmup: int,
             bucket_cap_mb: float) -> dict:
    """Time ``steps`` DDP steps on the torch ``group`` (this rank is in it); a step's time is
    the slowest rank's (max through ``ringrt_group``)."""
    import torch
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from benchmarks.torch.train_step import mlp

    rank, size = dist.get_rank(ringrt_group), dist.get_world_size(ringrt_group)
    generator = torch.Generator().manual_seed(rank)
    x = torch.randn(batch, widths[0], generator=generator)
    y = torch.randint(0, widths[-1], (batch,), generator=generator)
    model = DDP(mlp(widths), process_group=group, bucket_cap_mb=bucket_cap_mb)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for _ in range(warmup):
        step()
    times = np.empty(steps)
    dist.barrier(group=ringrt_group)
    for i in range(steps):
        start = time.perf_counter()
        step()
        times[i] = time.perf_counter() - start
    dist.all_reduce(times, op=dist.ReduceOp.MAX, group=ringrt_group)
    median = float(np.median(times))
    return {"world": size, "mode": f"torch gloo {bucket_cap_mb:g}M", "median_s": median,
            "mean_s": float(np.mean(times)), "p99_s": float(np.percentile(times, 99)),
            "samples_per_s": size * batch / median}
