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
optimizer state and the data position (and with ``--compress powersgd`` each rank's error
feedback, saved with ``ddp.params``), so a resumed run continues bit for bit.

``--elastic`` (under ``ringrun --nnodes MIN:MAX``): checkpoint every ``--ckpt-every`` steps
(default 10), resume from the last checkpoint at whatever world size the generation has (the
sampler re-shards the rest of the epoch), and after each checkpoint ask
``ringrt.elastic.membership_changed()``: nodes waiting to join make every rank exit with
``RESTART_EXIT_CODE`` so the launchers restart with them. The training set is cut to a
multiple of the global batch, so every sample of an epoch is used exactly once whatever the
world sizes (the batch must divide by each). At the end rank 0 prints the world-size schedule
(kept in the checkpoints) and a digest of the final parameters.

Across slow links (docs/local-sgd.md)::

    ringrun ... examples/train.py --task chars --sync-every 50     # DiLoCo across hosts,
                                                  # DDP inside each host (one host: all ranks)
    ringrun ... examples/train.py --task chars --compress powersgd # synchronous, compressed
    ... --log-json run.jsonl --eval-every 100 --target-loss 1.9 --max-samples 2000000

``--task chars`` is next-character prediction on ``pydoc_data.topics`` (examples/chardata.py,
examples/charmodel.py); ``--log-json`` makes rank 0 append one record per evaluation
(``time_s``, ``step``, ``samples``, ``val_loss``, plus ``epoch`` and ``world``); the run stops
at the first evaluation reaching ``--target-loss``, or once ``--max-samples`` samples (over all
ranks) were seen or ``--max-seconds`` of training time (evaluations excluded) passed. With ``--sync-every`` the evaluation uses rank 0's replica, and checkpoints
(every ``--ckpt-every``, a multiple of H) first make the replicas identical
(``DiLoCo.consolidate``), so checkpoints, resumes and elastic membership changes happen at
outer-step boundaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # mlp.py, when run as a script
from chardata import CharCorpus  # noqa: E402
from charmodel import CharMLP  # noqa: E402
from mlp import MLP, load_digits  # noqa: E402
from progress import progress, say  # noqa: E402
from progress import sample_log as open_sample_log  # noqa: E402

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
@click.option("--task", type=click.Choice(["digits", "chars"]), default="digits",
              show_default=True, help="digits: the UCI digits MLP; chars: next character of "
              "pydoc_data.topics (embedding + MLP, much harder).")
@click.option("--context", default=32, show_default=True, help="chars: characters of context.")
@click.option("--embed-dim", default=16, show_default=True, help="chars: embedding width.")
@click.option("--sync-every", default=0, show_default=True,
              help="DiLoCo: sync across hosts every H inner steps (DDP inside a host; on one "
                   "host, or with --scope ranks, DiLoCo between all ranks). 0: synchronous.")
@click.option("--scope", type=click.Choice(["auto", "hosts", "ranks"]), default="auto",
              show_default=True, help="With --sync-every: who syncs by DiLoCo.")
@click.option("--outer-lr", default=0.7, show_default=True, help="DiLoCo outer lr.")
@click.option("--outer-momentum", default=0.9, show_default=True,
              help="DiLoCo outer Nesterov momentum (0 and --outer-lr 1: local SGD).")
@click.option("--fragments", default=1, show_default=True,
              help="DiLoCo: sync 1/F of the parameters every H/F steps.")
@click.option("--sync-delay", default=1, show_default=True,
              help="DiLoCo: apply each outer step this many inner steps late (overlap).")
@click.option("--outer-compress", type=click.Choice(["none", "bf16", "int8"]), default="none",
              show_default=True, help="DiLoCo: pseudo-gradients sent as.")
@click.option("--error-feedback/--no-error-feedback", default=None,
              help="DiLoCo with --outer-compress: add what compression left out of a rank's "
                   "pseudo-gradient to its next one (default: DiLoCo's).")
@click.option("--compress", type=click.Choice(["none", "bf16", "powersgd"]), default="none",
              show_default=True, help="Synchronous DDP: gradients cross hosts as (on one "
              "host: the whole all-reduce is compressed).")
@click.option("--powersgd-rank", default=4, show_default=True)
@click.option("--eval-every", default=0, show_default=True,
              help="Evaluate the validation loss every N steps (0: at each epoch's end).")
@click.option("--val-samples", default=4096, show_default=True,
              help="Validation examples evaluated (chars; 0: all).")
@click.option("--log-json", type=click.Path(dir_okay=False), default=None,
              help="Rank 0 appends one JSON record per evaluation: time_s, step, samples, "
                   "val_loss.")
@click.option("--target-loss", default=0.0, show_default=True,
              help="Stop at the first evaluation with val_loss <= this (0: never).")
@click.option("--max-samples", default=0, show_default=True,
              help="Stop once this many samples (over all ranks) were trained on (0: never).")
@click.option("--max-seconds", default=0.0, show_default=True,
              help="Stop at the first evaluation after this much training time (0: never).")
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
          train_samples, step_sleep, sample_log, **more) -> None:
    opts = Options(**more)
    rank, world = dist.get_rank(), dist.get_world_size()
    if batch_size % world:
        raise click.UsageError(f"--batch-size {batch_size} must be a multiple of the world "
                               f"size {world}")
    if elastic_mode and not ckpt_dir:
        raise click.UsageError("--elastic needs --ckpt-dir (a directory every host can reach)")
    opts.check(zero)
    ckpt_every = ckpt_every or ((opts.sync_every or 10) if elastic_mode else 0)
    if opts.sync_every and ckpt_every % opts.sync_every:
        raise click.UsageError(f"--ckpt-every {ckpt_every} must be a multiple of --sync-every "
                               f"{opts.sync_every} (checkpoints happen at outer steps)")
    model, (x_train, y_train), (x_val, y_val) = build_task(opts, hidden, seed)
    keep = train_samples or len(x_train)
    if elastic_mode:                      # whole global batches: each sample once per epoch
        keep -= keep % batch_size
    x_train, y_train = x_train[:keep], y_train[:keep]
    dataset = ArrayDataset(x_train, y_train, np.arange(len(x_train)))
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, drop_last=True)

    step_fn, optimizer = make_trainer(model, lr, zero, not no_overlap, bucket_cap_mb, opts)

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
    log = open_sample_log(sample_log, rank)

    def save_checkpoint():
        if opts.sync_every:
            optimizer.consolidate()       # replicas identical: rank 0's copy is everyone's
        checkpoint.save(ckpt_dir, model.params, optimizer,
                        extra={"step": step, "loader": loader.state_dict(), "schedule": schedule})

    say(rank, f"world {world}, {opts.describe(zero)}, {opts.task} model "
              f"{getattr(model, 'sizes', '')}, {len(loader)} steps/epoch of {batch_size} samples")
    start, first_step, loss, throughput = time.perf_counter(), step, float("nan"), 0.0
    evaluate = Evaluator(opts, model, x_val, y_val, batch_size, start)
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
                if opts.eval_every and step % opts.eval_every == 0 and evaluate(step, epoch):
                    break
        if evaluate.stopped or (not opts.eval_every and evaluate(step, epoch)):
            break
        say(rank, f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, {throughput:,.0f} samples/s, "
                  f"{evaluate.summary()}")

    if elastic_mode:
        say(rank, "world-size schedule: " + ", ".join(
            f"{w} ranks from step {s}" for w, s in schedule) + f"; finished at step {step}")
    say(rank, _digest(model.params))
    say(rank, f"final {evaluate.summary()} after {step} steps "
              f"({time.perf_counter() - start:.1f} s){evaluate.reason}")
    if save_params and rank == 0:
        np.savez(save_params, **model.params)


@dataclass
class Options:
    """The task, DiLoCo and compression options (click's values)."""

    task: str = "digits"
    context: int = 32
    embed_dim: int = 16
    sync_every: int = 0
    scope: str = "auto"
    outer_lr: float = 0.7
    outer_momentum: float = 0.9
    fragments: int = 1
    sync_delay: int = 1
    outer_compress: str = "none"
    error_feedback: bool | None = None
    compress: str = "none"
    powersgd_rank: int = 4
    eval_every: int = 0
    val_samples: int = 4096
    log_json: str | None = None
    target_loss: float = 0.0
    max_samples: int = 0
    max_seconds: float = 0.0

    def check(self, zero: bool) -> None:
        if zero and (self.sync_every or self.compress != "none"):
            raise click.UsageError("--zero does not combine with --sync-every or --compress")
        if self.sync_every and self.compress != "none":
            raise click.UsageError("--compress is for synchronous DDP; with --sync-every use "
                                   "--outer-compress bf16|int8")
        if self.error_feedback and self.outer_compress == "none":
            raise click.UsageError("--error-feedback needs --outer-compress bf16|int8")
        if self.sync_every < 0 or self.eval_every < 0 or self.max_samples < 0:
            raise click.UsageError("--sync-every, --eval-every and --max-samples must be >= 0")

    def describe(self, zero: bool) -> str:
        if zero:
            return "ZeRO-1 Adam"
        if self.sync_every:
            return (f"DiLoCo (H={self.sync_every}, scope {self.scope}, outer lr "
                    f"{self.outer_lr}, momentum {self.outer_momentum}, fragments "
                    f"{self.fragments}, delay {self.sync_delay}, {self.outer_compress}"
                    f"{', error feedback' if self.error_feedback else ''}) + Adam")
        return "DDP + Adam" + ("" if self.compress == "none" else f" ({self.compress})")

    def diloco(self) -> dict:
        return {"outer_lr": self.outer_lr, "outer_momentum": self.outer_momentum,
                "fragments": self.fragments, "delay": self.sync_delay,
                "compress": None if self.outer_compress == "none" else self.outer_compress,
                "error_feedback": self.error_feedback}


def build_task(opts: Options, hidden: str, seed: int):
    """``(model, (x_train, y_train), (x_val, y_val))`` for ``--task``."""
    widths = tuple(map(int, hidden.split(",")))
    if opts.task == "digits":
        x_train, y_train, x_test, y_test = load_digits()
        model = MLP((x_train.shape[1], *widths, 10), seed=seed)
        return model, (x_train, y_train), (x_test, y_test)
    corpus = CharCorpus.load()
    x_train, y_train = corpus.windows(opts.context, "train")
    x_val, y_val = corpus.windows(opts.context, "val", limit=opts.val_samples or None)
    model = CharMLP(corpus.vocab_size, opts.context, opts.embed_dim, widths, seed=seed)
    return model, (x_train, y_train.astype(np.int64)), (x_val, y_val.astype(np.int64))


class Evaluator:
    """``evaluate(step, epoch) -> stop?``: rank 0 computes the validation loss (and the
    accuracy), appends a ``--log-json`` record, and decides whether to stop (target loss,
    sample or time budget); every rank learns the decision from one broadcast.

    ``time_s`` is training time: wall time since the first step less the evaluations' pauses
    (so how often one evaluates does not change it)."""

    REASONS = {1: "; reached --target-loss", 2: "; --max-samples spent",
               3: "; --max-seconds spent"}

    def __init__(self, opts: Options, model, x_val, y_val, batch_size: int, start: float):
        self.opts, self.model, self.x_val, self.y_val = opts, model, x_val, y_val
        self.batch_size, self.start, self.paused = batch_size, start, 0.0
        self.val_loss, self.accuracy, self.stopped, self.reason = float("nan"), 0.0, False, ""

    def __call__(self, step: int, epoch: int) -> bool:
        began = time.perf_counter()
        training_s = began - self.start - self.paused
        samples = step * self.batch_size
        stop = np.zeros(1, np.float64)
        if dist.get_rank() == 0:
            self.val_loss = self.model.loss(self.x_val, self.y_val)
            self.accuracy = self.model.accuracy(self.x_val, self.y_val)
            opts = self.opts
            stop[0] = (1 if opts.target_loss and self.val_loss <= opts.target_loss else
                       2 if opts.max_samples and samples >= opts.max_samples else
                       3 if opts.max_seconds and training_s >= opts.max_seconds else 0)
            self._record(step, epoch, samples, training_s)
        dist.broadcast(stop, src=0)
        self.stopped = bool(stop[0])
        self.reason = self.REASONS.get(int(stop[0]), "")
        self.paused += time.perf_counter() - began
        return self.stopped

    def _record(self, step: int, epoch: int, samples: int, training_s: float) -> None:
        if not self.opts.log_json:
            return
        record = {"time_s": round(training_s, 4), "step": step,
                  "samples": samples, "val_loss": round(self.val_loss, 6),
                  "val_accuracy": round(self.accuracy, 6), "epoch": epoch,
                  "world": dist.get_world_size()}
        with open(self.opts.log_json, "a") as out:
            out.write(json.dumps(record) + "\n")

    def summary(self) -> str:
        if self.opts.task == "digits":
            return f"test accuracy {self.accuracy:.2%}"
        return f"val loss {self.val_loss:.4f}, val accuracy {self.accuracy:.2%}"


def _digest(params) -> str:
    """SHA-256 of the parameters' bytes, in name order: equal digests, identical models."""
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode() + np.ascontiguousarray(params[name]).tobytes())
    return f"parameter digest {digest.hexdigest()[:16]}"


def make_trainer(model: MLP, lr: float, zero: bool, overlap: bool, bucket_cap_mb: float,
                 opts: Options | None = None):
    """Return ``(step(x, y) -> loss, optimizer)`` for DDP + Adam (compressed, or DiLoCo
    around it with ``opts.sync_every``) or for ZeRO-1 Adam."""
    opts = opts or Options()
    if zero:
        optimizer = ZeroRedundancyOptimizer(model.params, Adam, lr=lr)
        grads = {name: np.zeros_like(p) for name, p in model.params.items()}

        def zero_step(x, y):
            loss = model.loss_and_grads(x, y, grads)      # local grads; step() averages them
            optimizer.step(grads)
            return loss
        return zero_step, optimizer

    ddp = DistributedDataParallel(
        model.params, bucket_cap_mb=bucket_cap_mb,
        compress=None if opts.compress == "none" else opts.compress,
        powersgd_rank=opts.powersgd_rank, sync_every=opts.sync_every or None, scope=opts.scope)
    model.params = ddp.params                 # ddp owns the parameters from here on
    optimizer = Adam(ddp.params, lr=lr)
    if opts.sync_every:
        optimizer = ddp.wrap_optimizer(optimizer, **opts.diloco())

    def ddp_step(x, y):
        # grad_ready per finished gradient: its bucket's all-reduce starts during the backward
        loss = model.loss_and_grads(x, y, ddp.grads, ddp.grad_ready if overlap else None)
        ddp.sync()
        optimizer.step(ddp.grads)
        return loss
    return ddp_step, optimizer


if __name__ == "__main__":
    main()
