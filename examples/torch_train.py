"""Train a small PyTorch CNN on the UCI handwritten digits with DDP over the "ringrt" backend.

    ringrun -n 4 examples/torch_train.py                    # torch DDP over ringrt
    ringrun -n 4 examples/torch_train.py --backend gloo     # the same script over gloo
    torchrun --standalone --nproc-per-node 4 examples/torch_train.py
    python examples/torch_train.py                          # a world of one process

An ordinary torch DDP script: next to a gloo version, only ``import ringrt.torch`` and the
backend's name differ. The global batch (``--batch-size``) is split evenly over the ranks,
each reading its part of every epoch through torch's DistributedSampler; rank 0 shows the
same progress display as the NumPy demo (``examples/train.py``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))   # mlp.py, progress.py as a script
from mlp import load_digits  # noqa: E402
from progress import progress, say  # noqa: E402

import ringrt.torch  # noqa: E402,F401 - registers the "ringrt" backend


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and two dense layers for 8x8 single-channel images."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
                                  nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@click.command()
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=64, show_default=True,
              help="Global batch size, split evenly over the ranks.")
@click.option("--lr", default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Model init and shuffling seed.")
@click.option("--backend", type=click.Choice(["ringrt", "gloo"]), default="ringrt",
              show_default=True, help="torch.distributed backend.")
@click.option("--save-params", type=click.Path(dir_okay=False), default=None,
              help="Rank 0 saves the final parameters here (torch.save of the state dict).")
def main(epochs, batch_size, lr, seed, backend, save_params) -> None:
    """Train the digits CNN with torch DDP (see the module docstring)."""
    torch.set_num_threads(1)
    init_distributed(backend)
    try:
        train(epochs, batch_size, lr, seed, save_params)
    finally:
        dist.destroy_process_group()


def init_distributed(backend: str) -> None:
    """Join the job (env:// under ringrun or torchrun); without a launcher, a world of one."""
    if "RANK" in os.environ:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def digits():
    """(train dataset, test images, test labels) as tensors: images 1x8x8 in [0, 1]."""
    x_train, y_train, x_test, y_test = load_digits()
    images = torch.from_numpy(x_train).reshape(-1, 1, 8, 8)
    return (TensorDataset(images, torch.from_numpy(y_train)),
            torch.from_numpy(x_test).reshape(-1, 1, 8, 8), torch.from_numpy(y_test))


def train(epochs, batch_size, lr, seed, save_params) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size % world:
        raise click.UsageError(f"--batch-size {batch_size} must be a multiple of the world "
                               f"size {world}")
    dataset, x_test, y_test = digits()
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler,
                        drop_last=True)
    torch.manual_seed(seed)
    model = DDP(DigitsCNN())                       # broadcasts rank 0's parameters
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    params = sum(p.numel() for p in model.parameters())
    say(rank, f"world {world}, torch DDP over {dist.get_backend()}, CNN of {params:,} "
              f"parameters, {len(loader)} steps/epoch of {batch_size} samples")
    start, step, loss, throughput = time.perf_counter(), 0, float("nan"), 0.0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        with progress(rank, len(loader), f"epoch {epoch + 1}/{epochs}") as bar:
            for x, y in loader:
                optimizer.zero_grad()
                loss_tensor = nn.functional.cross_entropy(model(x), y)
                loss_tensor.backward()              # DDP all-reduces gradient buckets here
                optimizer.step()
                step += 1
                loss = loss_tensor.item()
                throughput = step * batch_size / (time.perf_counter() - start)
                bar.show(loss, throughput)
        say(rank, f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, {throughput:,.0f} samples/s, "
                  f"test accuracy {accuracy(model, x_test, y_test):.2%}")
    say(rank, f"final test accuracy {accuracy(model, x_test, y_test):.2%} after {step} steps "
              f"({time.perf_counter() - start:.1f} s)")
    if save_params and rank == 0:
        torch.save(model.module.state_dict(), save_params)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return (model.module(x).argmax(1) == y).float().mean().item()


if __name__ == "__main__":
    main()
