"""Train a small PyTorch model with DDP over the "ringrt" backend: a CNN on the UCI
handwritten digits, or (``--task chars``) a character model on text CPython ships.

    ringrun -n 4 examples/torch_train.py                    # torch DDP over ringrt
    ringrun -n 4 examples/torch_train.py --backend gloo     # the same script over gloo
    torchrun --standalone --nproc-per-node 4 examples/torch_train.py
    python examples/torch_train.py                          # a world of one process

Across machines on slow links (docs/training-across-laptops.md)::

    ringrun ... examples/torch_train.py --task chars --sync-every 50    # DiLoCo across hosts
    ringrun ... examples/torch_train.py --task chars --compress powersgd
    ringrun ... examples/torch_train.py --task chars --log-json run.json --target-loss 2.0

``--sync-every H`` trains synchronously (DDP) among the ranks of a host and by DiLoCo across
hosts (``ringrt.torch.localsgd``): every H steps an outer Nesterov step on the averaged
pseudo-gradients. ``--compress bf16|powersgd`` puts torch's own DDP comm hook on synchronous
DDP (with ``--sync-every``: bf16 or int8 pseudo-gradients instead).

An ordinary torch DDP script: next to a gloo version, only ``import ringrt.torch`` and the
backend's name differ. The global batch (``--batch-size``) is split evenly over the ranks,
each reading its part of every epoch through torch's DistributedSampler; rank 0 shows the
same progress display as the NumPy demo (``examples/train.py``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))   # mlp.py, progress.py as a script
from chardata import CharCorpus  # noqa: E402
from mlp import load_digits  # noqa: E402
from progress import progress, say  # noqa: E402

import ringrt.torch  # noqa: E402,F401 - registers the "ringrt" backend
from ringrt.torch.comm_hooks import bf16_hook  # noqa: E402
from ringrt.torch.localsgd import DiLoCo  # noqa: E402


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


class CharMLP(nn.Module):
    """Next character from the previous ``context`` ones: embeddings, one hidden layer."""

    def __init__(self, vocab: int, context: int, embed: int = 16, hidden: int = 512):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(context * embed, hidden), nn.GELU(),
                                  nn.Linear(hidden, vocab))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.embed(x))


def check_combination(sync_every: int, compress: str | None) -> None:
    if sync_every and compress == "powersgd":
        raise click.UsageError("--compress powersgd is for synchronous DDP; with --sync-every "
                               "use bf16 or int8")
    if not sync_every and compress == "int8":
        raise click.UsageError("--compress int8 needs --sync-every (DiLoCo)")


class Distributed:
    """The model to call and the step to take: synchronous DDP (optionally with a torch
    comm hook), or DiLoCo across hosts with DDP inside each (``sync_every``)."""

    def __init__(self, net: nn.Module, optimizer, sync_every: int, compress: str | None,
                 **outer):
        self.optimizer, self.diloco = optimizer, None
        check_combination(sync_every, compress)
        if sync_every:
            self.diloco = DiLoCo(net, optimizer, sync_every, compress=compress, two_level=True,
                                 **outer)
            self.model = self.diloco.model
            return
        # PowerSGD chains all-reduces in its futures' callbacks; with several buckets the
        # ranks can issue them in different orders (ringrt stops with a
        # CollectiveMismatchError), so its DDP keeps the gradients in one bucket.
        buckets = {"bucket_cap_mb": 1024} if compress == "powersgd" else {}
        self.model = DDP(net, **buckets)               # broadcasts rank 0's parameters
        if compress == "bf16":
            self.model.register_comm_hook(None, bf16_hook)
        elif compress == "powersgd":
            state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=4,
                                                start_powerSGD_iter=10)
            self.model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)

    @property
    def module(self) -> nn.Module:
        return self.model.module if isinstance(self.model, DDP) else self.model

    def step(self) -> None:
        (self.diloco or self.optimizer).step()

    def finish(self) -> None:
        if self.diloco is not None:
            self.diloco.finish()


@click.command()
@click.option("--task", type=click.Choice(["digits", "chars"]), default="digits",
              show_default=True, help="digits: a CNN on 8x8 digits; chars: next character.")
@click.option("--epochs", default=10, show_default=True, help="digits: passes over the data.")
@click.option("--batch-size", default=64, show_default=True,
              help="Global batch size, split evenly over the ranks.")
@click.option("--lr", default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Model init and shuffling seed.")
@click.option("--backend", type=click.Choice(["ringrt", "gloo"]), default="ringrt",
              show_default=True, help="torch.distributed backend.")
@click.option("--sync-every", type=click.IntRange(min=0), default=0, metavar="H",
              help="DiLoCo across hosts every H steps, DDP inside a host (0: DDP everywhere).")
@click.option("--compress", type=click.Choice(["bf16", "powersgd", "int8"]), default=None,
              help="DDP: torch's bf16 or PowerSGD comm hook; DiLoCo: bf16 or int8 "
                   "pseudo-gradients.")
@click.option("--save-params", type=click.Path(dir_okay=False), default=None,
              help="Rank 0 saves the final parameters here (torch.save of the state dict).")
@click.option("--samples", default=200_000, show_default=True,
              help="chars: global training samples to train on.")
@click.option("--max-seconds", default=0.0, help="chars: stop after this long (0: never).")
@click.option("--eval-every", default=10_000, show_default=True,
              help="chars: global samples between two validation losses.")
@click.option("--context", default=32, show_default=True, help="chars: characters seen.")
@click.option("--hidden", default=512, show_default=True, help="chars: hidden layer width.")
@click.option("--target-loss", default=0.0, help="chars: record when validation loss gets "
                                                 "to this (and stop, with --stop-at-target).")
@click.option("--stop-at-target", is_flag=True, help="chars: stop at --target-loss.")
@click.option("--outer-lr", default=0.7, show_default=True, help="DiLoCo's outer lr.")
@click.option("--outer-momentum", default=0.9, show_default=True,
              help="DiLoCo's outer Nesterov momentum.")
@click.option("--overlap/--no-overlap", default=True, show_default=True,
              help="DiLoCo: overlap the outer all_reduce with the next step (one step late).")
@click.option("--log-json", type=click.Path(dir_okay=False), default=None,
              help="chars: rank 0 writes every validation loss with its time here.")
def main(task, epochs, batch_size, lr, seed, backend, sync_every, compress, save_params,
         samples, max_seconds, eval_every, context, hidden, target_loss, stop_at_target,
         outer_lr, outer_momentum, overlap, log_json) -> None:
    """Train the digits CNN or the chars model with torch DDP (see the module docstring)."""
    check_combination(sync_every, compress)
    torch.set_num_threads(1)
    init_distributed(backend)
    try:
        if task == "digits":
            train(epochs, batch_size, lr, seed, save_params, sync_every, compress)
        else:
            train_chars(CharOptions(batch_size, lr, seed, sync_every, compress, samples,
                                    max_seconds, eval_every, context, hidden, target_loss,
                                    stop_at_target, log_json, outer_lr, outer_momentum,
                                    overlap))
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


def train(epochs, batch_size, lr, seed, save_params, sync_every=0, compress=None) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size % world:
        raise click.UsageError(f"--batch-size {batch_size} must be a multiple of the world "
                               f"size {world}")
    dataset, x_test, y_test = digits()
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler,
                        drop_last=True)
    torch.manual_seed(seed)
    net = DigitsCNN()
    training = Distributed(net, torch.optim.Adam(net.parameters(), lr=lr), sync_every, compress)
    model, optimizer = training.model, training.optimizer
    params = sum(p.numel() for p in net.parameters())
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
                training.step()
                step += 1
                loss = loss_tensor.item()
                throughput = step * batch_size / (time.perf_counter() - start)
                bar.show(loss, throughput)
        training.finish()
        say(rank, f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, {throughput:,.0f} samples/s, "
                  f"test accuracy {accuracy(model, x_test, y_test):.2%}")
    say(rank, f"final test accuracy {accuracy(model, x_test, y_test):.2%} after {step} steps "
              f"({time.perf_counter() - start:.1f} s)")
    if save_params and rank == 0:
        torch.save(training.module.state_dict(), save_params)


@dataclass(frozen=True)
class CharOptions:
    batch_size: int
    lr: float
    seed: int
    sync_every: int
    compress: str | None
    samples: int
    max_seconds: float
    eval_every: int
    context: int
    hidden: int
    target_loss: float
    stop_at_target: bool
    log_json: str | None
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    overlap: bool = True


def train_chars(o: CharOptions) -> None:
    """Train the chars model on ``o.samples`` global samples (or until ``o.max_seconds``);
    every ``o.eval_every`` samples the ranks pause (not timed) while rank 0 measures the
    validation loss of its replica."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if o.batch_size % world:
        raise click.UsageError(f"--batch-size {o.batch_size} must be a multiple of the world "
                               f"size {world}")
    corpus = CharCorpus.load()
    x_train, y_train = (torch.from_numpy(a).long() for a in corpus.windows(o.context, "train"))
    x_val, y_val = (torch.from_numpy(a).long()
                    for a in corpus.windows(o.context, "val", stride=11))
    torch.manual_seed(o.seed)
    net = CharMLP(corpus.vocab_size, o.context, hidden=o.hidden)
    training = Distributed(net, torch.optim.Adam(net.parameters(), lr=o.lr), o.sync_every,
                           o.compress, outer_lr=o.outer_lr, outer_momentum=o.outer_momentum,
                           overlap=o.overlap)
    params = sum(p.numel() for p in net.parameters())
    how = f"DiLoCo H={o.sync_every}" if o.sync_every else "DDP"
    say(rank, f"world {world}, {how}{' ' + o.compress if o.compress else ''} over "
              f"{dist.get_backend()}, char model of {params:,} parameters, {o.samples:,} "
              f"samples in steps of {o.batch_size}")
    per_rank = o.batch_size // world
    order = torch.Generator().manual_seed(o.seed)
    log = {"options": asdict(o), "world": world, "parameters": params, "evals": []}
    clock = Clock()
    step = seen = 0
    while seen < o.samples:
        if step % (len(x_train) // o.batch_size) == 0:
            permutation = torch.randperm(len(x_train), generator=order)
        start = (step % (len(x_train) // o.batch_size)) * o.batch_size + rank * per_rank
        index = permutation[start:start + per_rank]
        training.optimizer.zero_grad()
        nn.functional.cross_entropy(training.model(x_train[index]), y_train[index]).backward()
        training.step()
        step, seen = step + 1, seen + o.batch_size
        if seen % o.eval_every < o.batch_size or seen >= o.samples:
            if evaluate(training, x_val, y_val, clock, step, seen, o, log):
                break
    training.finish()
    if rank == 0 and o.log_json:
        Path(o.log_json).write_text(json.dumps(log, indent=1))


class Clock:
    """Training time: wall time less the evaluation pauses."""

    def __init__(self):
        self.start, self.paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start - self.paused


def evaluate(training, x_val, y_val, clock, step, seen, o: CharOptions, log) -> bool:
    """Pause every rank, rank 0 logs its replica's validation loss; True: stop training."""
    elapsed = clock.elapsed()
    paused_at = time.perf_counter()
    dist.barrier()
    stop = torch.zeros(1)
    if dist.get_rank() == 0:
        loss = validation_loss(training.module, x_val, y_val)
        log["evals"].append({"step": step, "samples": seen, "seconds": elapsed,
                             "val_loss": loss})
        reached = o.target_loss and loss <= o.target_loss
        if reached and "target_seconds" not in log:
            log.update(target_seconds=elapsed, target_samples=seen)
        stop[0] = (o.max_seconds and elapsed >= o.max_seconds) or (reached and o.stop_at_target)
        say(0, f"{seen:,} samples, {elapsed:.1f} s: validation loss {loss:.4f}")
    dist.broadcast(stop, src=0)
    clock.paused += time.perf_counter() - paused_at
    return bool(stop.item())


@torch.no_grad()
def validation_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    loss = sum(nn.functional.cross_entropy(net(x[i:i + 2048]), y[i:i + 2048], reduction="sum")
               for i in range(0, len(x), 2048))
    net.train()
    return float(loss) / len(x)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    net = model.module if isinstance(model, DDP) else model
    return (net(x).argmax(1) == y).float().mean().item()


if __name__ == "__main__":
    main()
