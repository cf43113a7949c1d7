"""Training-step throughput at world 1, 2, 4 (DDP with and without overlap, ZeRO-1) and
ZeRO-1 optimizer memory per rank.

Run it under the launcher with the largest world; smaller worlds are subgroups of it (the
ranks outside a subgroup wait)::

    ringrun -n 4 -m benchmarks.train_step
    ringrun -n 4 -m benchmarks.train_step --json benchmarks/results/train_step.json
    ringrun -n 2 -m benchmarks.train_step --sizes 64,128,64,10 --steps 100   # the demo model

Each rank trains ``examples/mlp.py``'s MLP on its own synthetic batch of ``--batch`` samples
(weak scaling: the global batch grows with the world). After a warm-up, every step is timed
on every rank; a step's time is the slowest rank's; the tables report the median and mean.
``#wrong`` counts parameters that differ between the ranks afterwards (must be 0).
"""

from __future__ import annotations

import json
import statistics
import time

import click
import numpy as np

import ringrt as dist
from benchmarks import _machine
from examples.mlp import MLP
from ringrt.ddp import DistributedDataParallel
from ringrt.optim import Adam, ZeroRedundancyOptimizer

MODES = ("ddp sync", "ddp overlap", "zero-1")


@click.command()
@click.option("--sizes", default="784,1024,1024,10", show_default=True,
              help="MLP layer widths.")
@click.option("--batch", default=64, show_default=True, help="Samples per rank per step.")
@click.option("--steps", default=30, show_default=True, help="Timed steps per case.")
@click.option("--warmup", default=5, show_default=True)
@click.option("--bucket-cap-mb", default=1.0, show_default=True,
              help="DDP bucket size (small enough that the model spans several buckets).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the results here (rank 0).")
def main(sizes, batch, steps, warmup, bucket_cap_mb, json_path):
    """Benchmark training steps over every world size up to the launched one."""
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = tuple(int(s) for s in sizes.split(","))
    results = []
    for size in [w for w in (1, 2, 4, 8, 16) if w <= world]:
        group = dist.new_group(list(range(size)))       # every rank calls it, as in torch
        if rank < size:
            for mode in MODES:
                results.append(run_case(mode, group, sizes, batch, steps, warmup, bucket_cap_mb))
        dist.barrier()
    if rank == 0:
        report(results, sizes, batch, steps, bucket_cap_mb, json_path)
    dist.destroy_process_group()


def run_case(mode, group, sizes, batch, steps, warmup, bucket_cap_mb) -> dict:
    """Time ``steps`` training steps of ``mode`` on ``group``; returns one result row."""
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    rng = np.random.default_rng(rank)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    model = MLP(sizes, seed=0)
    step, optimizer = make_step(mode, model, group, bucket_cap_mb)
    for _ in range(warmup):
        step(x, y)
    times = np.empty(steps)
    dist.barrier(group=group)
    for i in range(steps):
        start = time.perf_counter()
        step(x, y)
        times[i] = time.perf_counter() - start
    dist.all_reduce(times, op=dist.ReduceOp.MAX, group=group)   # a step ends on its slowest rank
    state_bytes = np.array([optimizer.state_bytes()], np.int64)
    dist.all_reduce(state_bytes, op=dist.ReduceOp.MAX, group=group)
    return {"world": size, "mode": mode, "median_s": float(np.median(times)),
            "mean_s": float(np.mean(times)), "samples_per_s": size * batch / np.median(times),
            "state_bytes_per_rank": int(state_bytes[0]),
            "numel": sum(p.size for p in model.params.values()),
            "wrong": count_wrong(model.params, group)}


def make_step(mode, model, group, bucket_cap_mb):
    """Return ``(step(x, y), optimizer)`` for one of MODES."""
    if mode == "zero-1":
        optimizer = ZeroRedundancyOptimizer(model.params, Adam, group=group, lr=1e-4)
        grads = {name: np.zeros_like(p) for name, p in model.params.items()}

        def zero_step(x, y):
            model.loss_and_grads(x, y, grads)
            optimizer.step(grads)
        return zero_step, optimizer
    ddp = DistributedDataParallel(model.params, bucket_cap_mb=bucket_cap_mb, group=group)
    model.params = ddp.params
    optimizer = Adam(ddp.params, lr=1e-4)
    on_layer_done = ddp.grad_ready if mode == "ddp overlap" else None

    def ddp_step(x, y):
        model.loss_and_grads(x, y, ddp.grads, on_layer_done)
        ddp.sync()
        optimizer.step(ddp.grads)
    return ddp_step, optimizer


def count_wrong(params, group) -> int:
    """Parameters that are not bit-identical on every rank of ``group``."""
    flat = np.concatenate([p.reshape(-1) for p in params.values()])
    low, high = flat.copy(), flat.copy()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    return int(np.count_nonzero(low != high))


def report(results, sizes, batch, steps, bucket_cap_mb, json_path) -> None:
    numel = results[0]["numel"]
    click.echo(f"\n# machine: {_machine.summary()}")
    click.echo(f"Training step: MLP {'-'.join(map(str, sizes))} ({numel / 1e6:.2f} M float32 "
               f"params), {batch} samples per rank, Adam, {steps} timed steps, DDP buckets of "
               f"{bucket_cap_mb:g} MiB")
    click.echo(f"{'world':>5}  {'mode':<12} {'median ms':>10} {'mean ms':>9} {'samples/s':>10} "
               f"{'vs world 1':>10} {'#wrong':>6}")
    base = {r["mode"]: r["samples_per_s"] for r in results if r["world"] == 1}
    for r in results:
        ratio = r["samples_per_s"] / base[r["mode"]] if r["mode"] in base else float("nan")
        click.echo(f"{r['world']:>5}  {r['mode']:<12} {r['median_s'] * 1e3:>10.2f} "
                   f"{r['mean_s'] * 1e3:>9.2f} {r['samples_per_s']:>10,.0f} {ratio:>9.2f}x "
                   f"{r['wrong']:>6}")
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
