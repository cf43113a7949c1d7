"""Training-step throughput at world 1, 2, 4, ... (DDP with and without overlap, ZeRO-1, and
torch's DDP on gloo when torch is installed), where each step's time goes, and ZeRO-1
optimizer memory per rank.

Run it under the launcher with the largest world; smaller worlds are subgroups of it (the
ranks outside a subgroup wait). Only the launched world runs on the default group, whose
collectives take shared memory; a subgroup's go over sockets (see the README), so for
shared memory at every world run one job per world (``--worlds 1,N`` with ``-n N``)::

    ringrun -n 4 -m benchmarks.training.train_step
    ringrun -n 4 -m benchmarks.training.train_step --json benchmarks/results/train_step-w4.json
    ringrun -n 2 -m benchmarks.training.train_step --sizes 64,128,64,10 --steps 100  # the demo model
    ringrun -n 4 -m benchmarks.training.train_step --no-torch                        # ringrt only
    ringrun -n 4 -m benchmarks.training.train_step --worlds 1,4  # world 4 on shm

Each rank trains ``examples/mlp.py``'s MLP on its own synthetic batch of ``--batch`` samples
(weak scaling: the global batch grows with the world). After a warm-up, every step is timed
on every rank; a step's time is the slowest rank's; the tables report the median, mean and
p99, samples/s, the weak-scaling efficiency (samples/s over world x the world-1 samples/s of
the same mode) and, where torch is installed, ringrt's samples/s over torch DDP on gloo's at
the same world (torch at 1 thread per rank, Adam, buckets of 1 MiB as ringrt's and torch's
default 25 MiB, its store a file in /tmp: one host only; ``--no-torch`` skips it). ``#wrong`` counts parameters that differ between
the ranks afterwards (must be 0).

The breakdown (ms per step, mean over steps and ranks) splits a ringrt step into:

- ``compute``: forward and backward, less the time spent in DDP's ``grad_ready`` hooks;
- ``hooks``: the hooks (DDP overlap: marking gradients, launching each bucket's all-reduce:
  the Python between buckets);
- ``wait``: ``ddp.sync()``: launching what is left and waiting for every bucket (DDP sync:
  all of the communication; overlap: what backward did not hide);
- ``optim``: the optimizer step (ZeRO-1: with its reduce-scatter and all-gather);
- ``comm``: the time ringrt's collectives took (their own clocks, ``ringrt.stats()``): on
  the caller's thread it is part of wait or optim, in overlap it runs during backward;
- ``stalls``: steps over 5x the median step.

``compute`` at world N against world 1 shows how much the ranks slow each other down
without communicating (shared cores, caches and memory bandwidth): ``compute x``.
At world 1 set ``OMP_NUM_THREADS=1`` (ringrun does so from ``-n 2``) so NumPy's BLAS runs
one thread per rank, as torch does here.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import click
import numpy as np

import ringrt as dist
from benchmarks.common import _machine
from benchmarks.training import _torch_ddp
from examples.mlp import MLP
from ringrt.ddp import DistributedDataParallel
from ringrt.optim import Adam, ZeroRedundancyOptimizer

MODES = ("ddp sync", "ddp overlap", "zero-1")
PARTS = ("compute", "hooks", "wait", "optim", "comm")


@click.command()
@click.option("--sizes", default="784,1024,1024,10", show_default=True,
              help="MLP layer widths.")
@click.option("--batch", default=64, show_default=True, help="Samples per rank per step.")
@click.option("--steps", default=30, show_default=True, help="Timed steps per case.")
@click.option("--warmup", default=5, show_default=True)
@click.option("--bucket-cap-mb", default=1.0, show_default=True,
              help="DDP bucket size (small enough that the model spans several buckets).")
@click.option("--worlds", default="1,2,4,8,16", show_default=True,
              help="World sizes to run, up to the launched one (smaller ones are subgroups).")
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True,
              help="Also time torch DDP on gloo (when torch is installed).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the results here (rank 0).")
def main(sizes, batch, steps, warmup, bucket_cap_mb, worlds, with_torch, json_path):
    """Benchmark training steps over every world size up to the launched one."""
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = tuple(int(s) for s in sizes.split(","))
    worlds = [int(w) for w in worlds.split(",")]
    with_torch = with_torch and _torch_ddp.available() and _one_host(world)
    store_path = _torch_ddp.open_gloo() if with_torch else None
    results = []
    for size in [w for w in worlds if w <= world]:
        # every rank calls new_group, as in torch; the whole world is the default group:
        # only its collectives take shared memory (a subgroup's go over sockets)
        group = None if size == world else dist.new_group(list(range(size)))
        torch_group = _torch_ddp.new_group(size) if with_torch else None
        if rank < size:
            for mode in MODES:
                results.append(run_case(mode, group, sizes, batch, steps, warmup, bucket_cap_mb))
            for cap in _torch_ddp.BUCKET_CAPS_MB if with_torch else ():
                results.append(_torch_ddp.run_case(torch_group, group, sizes, batch, steps,
                                                   warmup, cap))
        dist.barrier()
    if with_torch:
        _torch_ddp.close(store_path)
    if rank == 0:
        report(results, sizes, batch, steps, bucket_cap_mb, json_path)
    dist.destroy_process_group()


def _one_host(world: int) -> bool:
    """Whether every rank runs on this host (torch's gloo store here is a file)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world


class _Parts:
    """Seconds per step part on this rank (see the module docstring)."""

    def __init__(self):
        self.seconds = dict.fromkeys(PARTS, 0.0)

    def hook(self, grad_ready):
        """``grad_ready`` timed into ``hooks``."""
        def timed(name):
            start = time.perf_counter()
            grad_ready(name)
            self.seconds["hooks"] += time.perf_counter() - start
        return timed

    def run(self, part: str, call, *args):
        start = time.perf_counter()
        call(*args)
        self.seconds[part] += time.perf_counter() - start


def run_case(mode, group, sizes, batch, steps, warmup, bucket_cap_mb) -> dict:
    """Time ``steps`` training steps of ``mode`` on ``group``; returns one result row."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    model = MLP(sizes, seed=0)
    parts = _Parts()
    step, optimizer = make_step(mode, model, group, bucket_cap_mb, parts)
    for _ in range(warmup):
        step(x, y)
    parts.seconds = dict.fromkeys(PARTS, 0.0)
    times = np.empty(steps)
    dist.barrier(group=group)
    comm_before = _collective_seconds()
    for i in range(steps):
        start = time.perf_counter()
        step(x, y)
        times[i] = time.perf_counter() - start
    parts.seconds["comm"] = _collective_seconds() - comm_before
    parts.seconds["compute"] -= parts.seconds["hooks"]
    dist.all_reduce(times, op=dist.ReduceOp.MAX, group=group)   # a step ends on its slowest rank
    breakdown = np.array([parts.seconds[p] / steps for p in PARTS])
    dist.all_reduce(breakdown, group=group)
    state_bytes = np.array([optimizer.state_bytes()], np.int64)
    dist.all_reduce(state_bytes, op=dist.ReduceOp.MAX, group=group)
    median = float(np.median(times))
    return {"world": size, "mode": mode, "median_s": median, "mean_s": float(np.mean(times)),
            "p99_s": float(np.percentile(times, 99)),
            "stalled_steps": int(np.count_nonzero(times > 5 * median)),
            "samples_per_s": size * batch / median,
            "breakdown_ms": {p: float(v) * 1e3 / size for p, v in zip(PARTS, breakdown)},
            "state_bytes_per_rank": int(state_bytes[0]),
            "numel": sum(p.size for p in model.params.values()),
            "wrong": count_wrong(model.params, group)}


def _collective_seconds() -> float:
    """Seconds this rank's collectives took so far (ringrt.stats()), barriers excluded."""
    return sum(entry["seconds"] for name, entry in dist.stats()["ops"].items()
               if name != "barrier")


def make_step(mode, model, group, bucket_cap_mb, parts: _Parts):
    """Return ``(step(x, y), optimizer)`` for one of MODES, timing its parts into ``parts``."""
    if mode == "zero-1":
        optimizer = ZeroRedundancyOptimizer(model.params, Adam, group=group, lr=1e-4)
        grads = {name: np.zeros_like(p) for name, p in model.params.items()}

        def zero_step(x, y):
            parts.run("compute", model.loss_and_grads, x, y, grads)
            parts.run("optim", optimizer.step, grads)
        return zero_step, optimizer
    ddp = DistributedDataParallel(model.params, bucket_cap_mb=bucket_cap_mb, group=group)
    model.params = ddp.params
    optimizer = Adam(ddp.params, lr=1e-4)
    on_layer_done = parts.hook(ddp.grad_ready) if mode == "ddp overlap" else None

    def ddp_step(x, y):
        parts.run("compute", model.loss_and_grads, x, y, ddp.grads, on_layer_done)
        parts.run("wait", ddp.sync)
        parts.run("optim", optimizer.step, ddp.grads)
    return ddp_step, optimizer


def count_wrong(params, group) -> int:
    """Parameters that are not bit-identical on every rank of ``group``."""
    flat = np.concatenate([p.reshape(-1) for p in params.values()])
    low, high = flat.copy(), flat.copy()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    return int(np.count_nonzero(low != high))


def _scaling(results) -> None:
    """Add weak-scaling efficiency, compute slowdown and the ratio to torch (in place)."""
    base = {r["mode"]: r for r in results if r["world"] == 1}
    best_torch = {}
    for r in results:
        if r["mode"].startswith("torch"):
            best_torch[r["world"]] = max(best_torch.get(r["world"], 0), r["samples_per_s"])
    for r in results:
        one = base.get(r["mode"])
        r["efficiency"] = r["samples_per_s"] / (r["world"] * one["samples_per_s"]) if one \
            else None
        if "breakdown_ms" in r and one:
            r["compute_vs_world1"] = r["breakdown_ms"]["compute"] / \
                one["breakdown_ms"]["compute"]
        if not r["mode"].startswith("torch") and r["world"] in best_torch:
            r["vs_best_torch"] = r["samples_per_s"] / best_torch[r["world"]]


def _cell(value, fmt: str, width: int) -> str:
    return f"{value:{fmt}}".rjust(width) if value is not None else "-".rjust(width)


def report(results, sizes, batch, steps, bucket_cap_mb, json_path) -> None:
    _scaling(results)
    numel = results[0]["numel"]
    click.echo(f"\n# machine: {_machine.summary()}")
    click.echo(f"Training step: MLP {'-'.join(map(str, sizes))} ({numel / 1e6:.2f} M float32 "
               f"params), {batch} samples per rank, Adam, {steps} timed steps, DDP buckets of "
               f"{bucket_cap_mb:g} MiB")
    click.echo(f"{'world':>5}  {'mode':<16} {'median ms':>9} {'mean ms':>8} {'p99 ms':>7} "
               f"{'samples/s':>10} {'eff':>5} {'÷torch':>6} {'stall':>5} {'#wrong':>6}")
    for r in results:
        click.echo(f"{r['world']:>5}  {r['mode']:<16} {r['median_s'] * 1e3:>9.2f} "
                   f"{r['mean_s'] * 1e3:>8.2f} {r['p99_s'] * 1e3:>7.2f} "
                   f"{r['samples_per_s']:>10,.0f} {_cell(r['efficiency'], '.0%', 5)} "
                   f"{_cell(r.get('vs_best_torch'), '.2f', 6)} "
                   f"{_cell(r.get('stalled_steps'), 'd', 5)} {_cell(r.get('wrong'), 'd', 6)}")
    click.echo("\nWhere a ringrt step goes (ms per step, mean over steps and ranks; comm overlaps "
               "compute in 'ddp overlap'):")
    click.echo(f"{'world':>5}  {'mode':<12} {'step':>6} " + " ".join(f"{p:>7}" for p in PARTS)
               + f" {'compute x':>9}")
    for r in results:
        if "breakdown_ms" in r:
            cells = " ".join(f"{r['breakdown_ms'][p]:>7.2f}" for p in PARTS)
            click.echo(f"{r['world']:>5}  {r['mode']:<12} {r['mean_s'] * 1e3:>6.2f} {cells} "
                       f"{_cell(r.get('compute_vs_world1'), '.2f', 9)}")
    full = 2 * numel * 4                                   # Adam: two float32 moments
    click.echo("\nAdam optimizer state per rank (bytes):")
    click.echo(f"{'world':>5}  {'unsharded':>12} {'ZeRO-1':>12} {'ratio':>7}")
    for r in results:
        if r["mode"] == "zero-1":
            click.echo(f"{r['world']:>5}  {full:>12,} {r['state_bytes_per_rank']:>12,} "
                       f"{r['state_bytes_per_rank'] / full:>7.3f}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"benchmark": "train_step", "machine": _machine.describe(),
                       "sizes": sizes, "batch_per_rank": batch,
                       "steps": steps, "bucket_cap_mb": bucket_cap_mb, "results": results,
                       "median_of_medians_s": statistics.median(r["median_s"] for r in results)},
                      f, indent=1)
        click.echo(f"\nwrote {json_path}")


if __name__ == "__main__":
    main()
