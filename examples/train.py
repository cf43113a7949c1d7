"""Train a NumPy MLP on the UCI handwritten digits, data parallel over ringrt ranks.

    ringrun -n 4 examples/train.py                  # DDP, bucket all-reduce overlapping backward
    ringrun -n 4 examples/train.py --zero           # ZeRO-1: Adam state sharded over the ranks
    ringrun -n 4 --max-restarts 1 examples/train.py --ckpt-dir /tmp/ckpt --ckpt-every 20 \\
        --crash-at-step 50                          # rank 1 dies once; the job resumes
    python examples/train.py                        # a world of one process
    ringrun --nnodes 2:4 --master-addr node0 --max-restarts 3 -n 1 examples/train.py \\
        --elastic --ckpt-dir /shared/ckpt --batch-size 48   # on each host: elastic membership

The global batch (``--batch-size``) is split evenly over the ranks; each rank reads its part of
every epoch through DistributedSampler + DataLoader. Checkpoints hold the parameters, the
optimizer state and the data position, so a resumed run continues bit for bit.

``--elastic`` (under ``ringrun --nnodes MIN:MAX``): checkpoint every ``--ckpt-every`` steps
(default 10), resume from the last checkpoint at whatever world size the generation has (the
sampler re-shards the rest of the epoch), and after each checkpoint ask
``ringrt.elastic.membership_changed()``: nodes waiting to join make every rank exit with
``RESTART_EXIT_CODE`` so the launchers restart with them. The training set is cut to a
multiple of the global batch, so every sample of an epoch is used exactly once whatever the
world sizes (the batch must divide by each). At the end rank 0 prints the world-size schedule
(kept in the checkpoints) and a digest of the final parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # mlp.py, when run as a script
from mlp import MLP, load_digits  # noqa: E402
from progress import progress, say  # noqa: E402

import ringrt as dist  # noqa: E402
from ringrt import checkpoint, elastic  # noqa: E402
from ringrt.data import ArrayDataset, DataLoader, DistributedSampler  # noqa: E402
from ringrt.ddp import DistributedDataParallel  # noqa: E402
from ringrt.optim import Adam, ZeroRedundancyOptimizer  # noqa: E402


@click.command()
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=64, show_default=True,
              help="Global batch size, split evenly over the ranks.")
@click.option("--lr", default=3e-3, show_default=True, help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, help="Model init and shuffling seed.")
@click.option("--hidden", default="128,64", show_default=True, help="Hidden layer widths.")
@click.option("--zero", is_flag=True, help="ZeRO-1 sharded Adam instead of DDP + Adam.")
@click.option("--no-overlap", is_flag=True,
              help="DDP: reduce every bucket after the backward instead of during it.")
@click.option("--bucket-cap-mb", default=0.025, show_default=True,
              help="DDP bucket size (small, so this small model gets several buckets).")
@click.option("--ckpt-dir", type=click.Path(file_okay=False), default=None)
@click.option("--ckpt-every", default=0, show_default=True, help="Checkpoint every K steps.")
@click.option("--resume", is_flag=True,
              help="Resume from --ckpt-dir (automatic when RINGRT_RESTART_COUNT > 0).")
@click.option("--crash-at-step", default=0, help="Fault injection: rank 1 exits at step N "
              "(first attempt only).")
@click.option("--save-params", type=click.Path(dir_okay=False), default=None,
              help="Rank 0 saves the final parameters here (.npz).")
@click.option("--elastic", "elastic_mode", is_flag=True,
              help="Elastic job: checkpoint every --ckpt-every steps (default 10), resume at "
                   "any world size, admit waiting nodes at checkpoints (needs --ckpt-dir).")
@click.option("--stop-at-step", default=0, help="Save a checkpoint after step N and exit "
              "(replays a schedule of world sizes, one ringrun per segment).")
@click.option("--train-samples", default=0, help="Use only the first N training samples.")
@click.option("--step-sleep", default=0.0, help="Sleep this long after every step (lets a "
              "demo or test cut a host mid-training).")
@click.option("--sample-log", type=click.Path(file_okay=False), default=None,
              help="Each rank appends the sample indices of every step to "
                   "DIR/gen{G}-rank{R}.jsonl (checks that every sample is seen once).")
def main(**opts) -> None:
    """Train the digits MLP (see the module docstring)."""
    init_distributed()
    try:
        train(**opts)
    finally:
        dist.destroy_process_group()


def init_distributed() -> None:
    """Join the job; started without a launcher (no RANK), become a world of one."""
    try:
        dist.init_process_group()
    except ValueError:
        if "RANK" in os.environ:
            raise
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="0")
        dist.init_process_group()


def train(epochs, batch_size, lr, seed, hidden, zero, no_overlap, bucket_cap_mb, ckpt_dir,
          ckpt_every, resume, crash_at_step, save_params, elastic_mode, stop_at_step,
          train_samples, step_sleep, sample_log) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size % world:
        raise click.UsageError(f"--batch-size {batch_size} must be a multiple of the world "
                               f"size {world}")
    if elastic_mode and not ckpt_dir:
        raise click.UsageError("--elastic needs --ckpt-dir (a directory every host can reach)")
    ckpt_every = ckpt_every or (10 if elastic_mode else 0)
    x_train, y_train, x_test, y_test = load_digits()
    keep = train_samples or len(x_train)
    if elastic_mode:                      # whole global batches: each sample once per epoch
        keep -= keep % batch_size
    x_train, y_train = x_train[:keep], y_train[:keep]
    dataset = ArrayDataset(x_train, y_train, np.arange(len(x_train)))
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, drop_last=True)

    sizes = (x_train.shape[1], *map(int, hidden.split(",")), 10)
    model = MLP(sizes, seed=seed)
    step_fn, optimizer = make_trainer(model, lr, zero, not no_overlap, bucket_cap_mb)

    restart = int(os.environ.get("RINGRT_RESTART_COUNT", "0"))
    step, schedule = 0, []
    if ckpt_dir and (resume or restart > 0 or elastic_mode) and checkpoint.exists(ckpt_dir):
        extra = checkpoint.load(ckpt_dir, model.params, optimizer)
        step, schedule = extra["step"], extra.get("schedule", [])
        loader.load_state_dict(extra["loader"])
        say(rank, f"resumed from {ckpt_dir} at step {step} (restart {restart})")
    schedule.append([world, step])
    if elastic_mode:
        say(rank, f"generation {elastic.generation()}: world size {world} from step {step}")
    log = _sample_log(sample_log, rank)

    def save_checkpoint():
        checkpoint.save(ckpt_dir, model.params, optimizer,
                        extra={"step": step, "loader": loader.state_dict(), "schedule": schedule})

    say(rank, f"world {world}, {'ZeRO-1 Adam' if zero else 'DDP + Adam'}, model {sizes}, "
              f"{len(loader)} steps/epoch of {batch_size} samples")
    start, first_step, loss, throughput = time.perf_counter(), step, float("nan"), 0.0
    for epoch in range(sampler.epoch, epochs):
        sampler.set_epoch(epoch)
        with progress(rank, len(loader), f"epoch {epoch + 1}/{epochs}") as bar:
            for x, y, index in loader:
                step += 1
                if step == crash_at_step and rank == 1 and restart == 0:
                    print(f"fault injection: rank 1 exits at step {step}", flush=True)
                    os._exit(17)
                loss = step_fn(x, y)
                log(step, epoch, index)
                throughput = (step - first_step) * batch_size / (time.perf_counter() - start)
                bar.show(loss, throughput)
                time.sleep(step_sleep)
                if step == stop_at_step:
                    save_checkpoint()
                    say(rank, f"stopped after step {step}; {_digest(model.params)}")
                    return
                if ckpt_dir and ckpt_every and step % ckpt_every == 0:
                    save_checkpoint()
                    if elastic_mode and elastic.membership_changed():
                        say(rank, f"nodes are waiting to join: restarting after step {step}")
                        sys.exit(elastic.RESTART_EXIT_CODE)   # main() leaves the group
        say(rank, f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, {throughput:,.0f} samples/s, "
                  f"test accuracy {model.accuracy(x_test, y_test):.2%}")

    if elastic_mode:
        say(rank, "world-size schedule: " + ", ".join(
            f"{w} ranks from step {s}" for w, s in schedule) + f"; finished at step {step}")
    say(rank, _digest(model.params))
    say(rank, f"final test accuracy {model.accuracy(x_test, y_test):.2%} after {step} steps "
              f"({time.perf_counter() - start:.1f} s)")
    if save_params and rank == 0:
        np.savez(save_params, **model.params)


def _digest(params) -> str:
    """SHA-256 of the parameters' bytes, in name order: equal digests, identical models."""
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode() + np.ascontiguousarray(params[name]).tobytes())
    return f"parameter digest {digest.hexdigest()[:16]}"


def _sample_log(directory, rank):
    """``log(step, epoch, indices)``: append one JSON line per step (no-op without a dir)."""
    if directory is None:
        return lambda *_: None
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"gen{elastic.generation()}-rank{rank}.jsonl")

    def log(step, epoch, indices):
        with open(path, "a") as out:
            out.write(json.dumps({"step": step, "epoch": epoch, "time": time.time(),
                                  "indices": [int(i) for i in indices]}) + "\n")
    return log


def make_trainer(model: MLP, lr: float, zero: bool, overlap: bool, bucket_cap_mb: float):
    """Return ``(step(x, y) -> loss, optimizer)`` for DDP + Adam or for ZeRO-1 Adam."""
    if zero:
        optimizer = ZeroRedundancyOptimizer(model.params, Adam, lr=lr)
        grads = {name: np.zeros_like(p) for name, p in model.params.items()}

        def zero_step(x, y):
            loss = model.loss_and_grads(x, y, grads)      # local grads; step() averages them
            optimizer.step(grads)
            return loss
        return zero_step, optimizer

    ddp = DistributedDataParallel(model.params, bucket_cap_mb=bucket_cap_mb)
    model.params = ddp.params                 # ddp owns the parameters from here on
    optimizer = Adam(ddp.params, lr=lr)

    def ddp_step(x, y):
        # grad_ready per finished gradient: its bucket's all-reduce starts during the backward
        loss = model.loss_and_grads(x, y, ddp.grads, ddp.grad_ready if overlap else None)
        ddp.sync()
        optimizer.step(ddp.grads)
        return loss
    return ddp_step, optimizer


if __name__ == "__main__":
    main()
