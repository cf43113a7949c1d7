"""The chaos soak's torch workload: elastic torch DDP over the "ringrt" backend.

The same job as ``examples/train.py --elastic`` (and the same options, so the soak drives and
replays both alike), with a torch model: a small MLP on the UCI digits, ``torch.nn.parallel.
DistributedDataParallel`` over ``dist.init_process_group("ringrt")``, torch's Adam.

What makes it elastic is what the NumPy workload has, in torch's terms:

* the data: ringrt's ``DistributedSampler`` and ``DataLoader`` (NumPy, no torch), whose state
  is the epoch's position, so a generation of another world size re-shards the rest of the
  epoch and every sample is still seen once;
* the checkpoint: rank 0 writes the model's and the optimizer's state dicts, the step, the
  loader's state and the world-size schedule with ``torch.save`` into a temporary file, fsyncs
  it, renames it over ``torch-ckpt.pt`` and fsyncs the directory (the same atomic publication
  as ``ringrt.checkpoint``); a barrier follows, so no rank goes on before it is complete;
* membership: after each checkpoint ``ringrt.torch.membership_changed()`` (rank 0 reads the
  elastic record from ringrun's store, the one torch's rendezvous already holds, and
  broadcasts whether nodes wait to join).

With ``--sync-every H`` it trains by DiLoCo instead of DDP (``ringrt.torch.DiLoCo``, torch's
Adam inside, ``--fragments F``): checkpoints fall on outer-step boundaries (``--ckpt-every``
a multiple of H), where ``consolidate()`` makes every replica rank 0's, whose checkpoint then
also holds DiLoCo's outer state; membership changes happen there.

Bit-for-bit replay: one CPU thread, deterministic algorithms, and ``RINGRT_ALGO`` forcing flat
ring collectives (the soak sets it), so the gradients' sums depend on the world size alone.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))         # mlp.py's digits, as examples/train.py
from mlp import load_digits  # noqa: E402
from progress import sample_log as open_sample_log  # noqa: E402

from ringrt import elastic  # noqa: E402
from ringrt.torch import DiLoCo, membership_changed  # noqa: E402 (registers the backend)
from ringrt.data import ArrayDataset, DataLoader, DistributedSampler  # noqa: E402

CHECKPOINT = "torch-ckpt.pt"


@click.command()
@click.option("--elastic", "elastic_mode", is_flag=True, help="Checkpoint, resume and admit "
              "waiting nodes as examples/train.py --elastic does.")
@click.option("--epochs", default=4, show_default=True)
@click.option("--batch-size", default=24, show_default=True, help="Global batch size.")
@click.option("--train-samples", default=240, show_default=True)
@click.option("--hidden", default=16, show_default=True, help="Hidden layer width.")
@click.option("--lr", default=0.01, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--ckpt-dir", type=click.Path(file_okay=False), required=True)
@click.option("--ckpt-every", default=5, show_default=True)
@click.option("--resume", is_flag=True)
@click.option("--stop-at-step", default=0, help="Save a checkpoint after step N and exit.")
@click.option("--save-params", type=click.Path(dir_okay=False), default=None,
              help="Rank 0 saves the final parameters here (.npz).")
@click.option("--sample-log", type=click.Path(file_okay=False), default=None)
@click.option("--step-sleep", default=0.0)
@click.option("--sync-every", default=0, show_default=True, metavar="H",
              help="DiLoCo: an outer step every H steps instead of DDP (0: DDP).")
@click.option("--fragments", default=1, show_default=True, help="DiLoCo's fragments.")
def main(elastic_mode, epochs, batch_size, train_samples, hidden, lr, seed, ckpt_dir,
         ckpt_every, resume, stop_at_step, save_params, sample_log, step_sleep, sync_every,
         fragments) -> None:
    """Elastic torch DDP (or DiLoCo) over ringrt on the digits (see the module docstring)."""
    if sync_every and (ckpt_every % sync_every or (stop_at_step % sync_every)):
        raise click.UsageError(f"--ckpt-every {ckpt_every} and --stop-at-step {stop_at_step} "
                               f"must be multiples of --sync-every {sync_every}: checkpoints "
                               "fall on outer-step boundaries")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("ringrt")
    try:
        job = Job(batch_size, train_samples, hidden, lr, seed, Path(ckpt_dir), sync_every,
                  fragments)
        if job.resume_wanted(resume or elastic_mode):
            job.load()
        job.train(epochs, ckpt_every, stop_at_step, elastic_mode, sample_log, step_sleep)
        if save_params and dist.get_rank() == 0:
            np.savez(save_params, **{name: tensor.detach().numpy().copy()
                                     for name, tensor in job.net.state_dict().items()})
    finally:
        dist.destroy_process_group()


class Job:
    """One generation's model, optimizer, data position and checkpoint directory."""

    def __init__(self, batch_size: int, train_samples: int, hidden: int, lr: float,
                 seed: int, ckpt_dir: Path, sync_every: int = 0, fragments: int = 1):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if batch_size % self.world:
            raise click.UsageError(f"--batch-size {batch_size} must be a multiple of the "
                                   f"world size {self.world} (rank {self.rank})")
        x_train, y_train, _, _ = load_digits()
        keep = train_samples - train_samples % batch_size       # whole global batches
        dataset = ArrayDataset(x_train[:keep], y_train[:keep], np.arange(keep))
        self.sampler = DistributedSampler(dataset, num_replicas=self.world, rank=self.rank,
                                          shuffle=True, seed=seed)
        self.loader = DataLoader(dataset, batch_size=batch_size // self.world,
                                 sampler=self.sampler, drop_last=True)
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(x_train.shape[1], hidden), nn.ReLU(),
                                 nn.Linear(hidden, 10))
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.diloco = DiLoCo(self.net, self.optimizer, sync_every, fragments=fragments) \
            if sync_every else None
        self.model = self.net if self.diloco else DDP(self.net)
        self.ckpt_dir, self.step, self.schedule = ckpt_dir, 0, []

    def resume_wanted(self, asked: bool) -> bool:
        restarted = int(os.environ.get("RINGRT_RESTART_COUNT", "0")) > 0
        return (asked or restarted) and (self.ckpt_dir / CHECKPOINT).exists()

    def load(self) -> None:
        state = torch.load(self.ckpt_dir / CHECKPOINT, weights_only=True)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loader.load_state_dict(json.loads(state["loader"]))
        if self.diloco is not None:
            self.diloco.load_state_dict(state["diloco"])
        self.step, self.schedule = state["step"], json.loads(state["schedule"])

    def save(self) -> None:
        """Rank 0 publishes the checkpoint atomically; every rank waits until it has."""
        if self.diloco is not None:
            self.diloco.consolidate()            # every replica rank 0's, outer step applied
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            staging = self.ckpt_dir / f".{CHECKPOINT}.incomplete"
            state = {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "step": self.step, "loader": json.dumps(self.loader.state_dict()),
                     "schedule": json.dumps(self.schedule)}
            if self.diloco is not None:
                state["diloco"] = self.diloco.state_dict()
            with open(staging, "wb") as out:
                torch.save(state, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(staging, self.ckpt_dir / CHECKPOINT)
            directory = os.open(self.ckpt_dir, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        dist.barrier()

    def train(self, epochs: int, ckpt_every: int, stop_at_step: int, elastic_mode: bool,
              sample_log: str | None, step_sleep: float) -> None:
        self.schedule.append([self.world, self.step])
        log = open_sample_log(sample_log, self.rank)
        for epoch in range(self.sampler.epoch, epochs):
            self.sampler.set_epoch(epoch)
            for x, y, index in self.loader:
                self.step += 1
                self.optimizer.zero_grad()
                loss = nn.functional.cross_entropy(self.model(torch.from_numpy(x)),
                                                   torch.from_numpy(y).long())
                loss.backward()                  # DDP all-reduces the gradients here
                if self.diloco is not None:
                    self.diloco.step()           # the inner step; every H an outer one
                else:
                    self.optimizer.step()
                log(self.step, epoch, index)
                time.sleep(step_sleep)
                if self.step == stop_at_step:
                    self.save()
                    return
                if ckpt_every and self.step % ckpt_every == 0:
                    self.save()
                    if elastic_mode and membership_changed():
                        sys.exit(elastic.RESTART_EXIT_CODE)


if __name__ == "__main__":
    main()
