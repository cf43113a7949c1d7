"""A torch DDP training step over the "ringrt" backend against gloo, in one job, interleaved.

::

    ringrun -n 2 -m benchmarks.torch.train_step
    ringrun -n 4 -m benchmarks.torch.train_step --json benchmarks/results/torch_train_step.json
    python -m benchmarks.torch.train_step --json ...       # world 1 (the scaling baseline)

Every rank trains the same MLP (``--sizes``, 784-1024-512-10: 1.33 M parameters) on its own
synthetic batch of ``--batch`` samples (weak scaling), with torch's DDP at its defaults and
SGD. Four systems take turns, ``--steps`` timed steps each per round (after a warm-up):

- ``local``: the model without DDP -- the step with no communication;
- ``ringrt``: DDP over the ringrt default group, as it runs by default (``async_mode``
  "auto": DDP's bucket all-reduces inline on the backward thread when the host has fewer
  than two cores per rank, on ringrt's thread otherwise);
- ``ringrt-thread`` / ``ringrt-inline``: the same with ``async_mode`` forced -- the
  measurement behind the default;
- ``gloo``: DDP over a gloo group of the same ranks.

A step's time is the slowest rank's; the table gives median and mean, samples/s, the
communication overhead (median step minus the local median) and its ratio to gloo's, and
scaling efficiency against the world-1 run in the same JSON file when there is one. After
the run the ringrt and gloo replicas must hold the same parameters (``#wrong``: elements
differing by more than float32 summation order can explain; world 2 must be bit-identical).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import click
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import ringrt.torch  # noqa: F401 - registers the backend
from benchmarks.common import _machine

SYSTEMS = ("local", "ringrt", "ringrt-thread", "ringrt-inline", "gloo")


@click.command()
@click.option("--sizes", default="784,1024,512,10", show_default=True, help="MLP widths.")
@click.option("--batch", default=64, show_default=True, help="Samples per rank per step.")
@click.option("--steps", default=20, show_default=True, help="Timed steps per round.")
@click.option("--rounds", default=5, show_default=True, help="Turns per system.")
@click.option("--warmup", default=5, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(sizes, batch, steps, rounds, warmup, json_path):
    """Time DDP training steps over ringrt and gloo (see the module docstring)."""
    torch.set_num_threads(1)
    if "RANK" in os.environ:
        dist.init_process_group("ringrt")
    else:
        dist.init_process_group("ringrt", store=dist.HashStore(), rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    widths = [int(w) for w in sizes.split(",")]
    runners = make_runners(widths, batch, rank)
    times = {name: [] for name in SYSTEMS}
    for name in SYSTEMS:
        for _ in range(warmup):
            runners[name]()
    for turn in range(rounds):
        order = SYSTEMS if turn % 2 == 0 else SYSTEMS[::-1]
        for name in order:
            times[name] += timed(runners[name], steps)
    slowest = {name: slowest_rank(values) for name, values in times.items()}
    wrong, worst = compare_replicas(runners)
    if rank == 0:
        result = summarize(slowest, world, batch, widths, wrong, worst)
        baseline = record(json_path, result) if json_path else None
        click.echo(format_table(result, baseline))
        if json_path:
            click.echo(f"# wrote {json_path}")
    dist.destroy_process_group()


class Runner:
    """One system's model, optimizer and batch; calling it runs one training step."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 before=None):
        self.model, self.x, self.y, self.before = model, x, y, before
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def __call__(self) -> None:
        if self.before is not None:
            self.before()
        self.optimizer.zero_grad()
        nn.functional.cross_entropy(self.model(self.x), self.y).backward()
        self.optimizer.step()


def make_runners(widths, batch, rank) -> dict[str, Runner]:
    generator = torch.Generator().manual_seed(rank)
    x = torch.randn(batch, widths[0], generator=generator)
    y = torch.randint(0, widths[-1], (batch,), generator=generator)
    ringrt_group = dist.distributed_c10d._get_default_group()
    gloo = dist.new_group(backend="gloo")

    def mode(name):
        return lambda: setattr(ringrt_group, "async_mode", name)
    return {"local": Runner(mlp(widths), x, y),
            "ringrt": Runner(DDP(mlp(widths)), x, y, before=mode("auto")),
            "ringrt-thread": Runner(DDP(mlp(widths)), x, y, before=mode("thread")),
            "ringrt-inline": Runner(DDP(mlp(widths)), x, y, before=mode("inline")),
            "gloo": Runner(DDP(mlp(widths), process_group=gloo), x, y)}


def mlp(widths) -> nn.Module:
    torch.manual_seed(0)
    layers = []
    for fan_in, fan_out in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def timed(step, count: int) -> list[float]:
    dist.barrier()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def slowest_rank(values: list[float]) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def compare_replicas(runners) -> tuple[int, float]:
    """Elements where ringrt's DDP replica and gloo's differ beyond float32 summation order
    (both trained on the same batches the same number of steps), and the largest gap."""
    def flat(name):
        module = runners[name].model.module
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    ours, theirs = flat("ringrt"), flat("gloo")
    exact = dist.get_world_size() <= 2
    gap = (ours - theirs).abs()
    wrong = int((gap > 0).sum()) if exact else int((gap > 1e-5 * theirs.abs() + 1e-7).sum())
    return wrong, float(gap.max())


def summarize(slowest, world, batch, widths, wrong, worst) -> dict:
    stats = {name: {"median_ms": statistics.median(t) * 1e3, "mean_ms": statistics.fmean(t) * 1e3}
             for name, t in slowest.items()}
    local = stats["local"]["median_ms"]
    for entry in stats.values():
        entry["samples_per_s"] = world * batch / (entry["median_ms"] / 1e3)
        entry["overhead_ms"] = entry["median_ms"] - local
    params = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
    return {"world": world, "batch_per_rank": batch, "sizes": widths, "params": params,
            "steps": len(slowest["local"]), "systems": stats, "wrong": wrong,
            "max_param_gap": worst, "machine": _machine.describe(), "torch": torch.__version__}


def record(path: str, result: dict) -> dict | None:
    """Store this world's result in ``path``; returns the world-1 result there, if any."""
    doc = {"benchmark": "torch_train_step", "runs": []}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    doc["runs"] = sorted([r for r in doc["runs"] if r["world"] != result["world"]] + [result],
                         key=lambda r: r["world"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    return next((r for r in doc["runs"] if r["world"] == 1), None)


def format_table(result: dict, baseline: dict | None) -> str:
    stats, world = result["systems"], result["world"]
    gloo_overhead = stats["gloo"]["overhead_ms"]
    lines = [f"# machine: {_machine.summary()}",
             f"# torch DDP step, world {world}: MLP {'-'.join(map(str, result['sizes']))} "
             f"({result['params'] / 1e6:.2f} M params), {result['batch_per_rank']} samples per "
             f"rank, SGD; {result['steps']} timed steps per system, interleaved",
             f"{'system':<14} {'median ms':>9} {'mean ms':>8} {'samples/s':>10} "
             f"{'overhead ms':>11} {'÷ gloo':>7} {'scaling':>8}"]
    for name in SYSTEMS:
        entry = stats[name]
        ratio = entry["overhead_ms"] / gloo_overhead if name != "local" and gloo_overhead > 0 \
            else float("nan")
        scaling = float("nan")
        if baseline is not None and name in baseline["systems"]:
            scaling = entry["samples_per_s"] / (world * baseline["systems"][name]
                                                ["samples_per_s"])
        lines.append(f"{name:<14} {entry['median_ms']:>9.2f} {entry['mean_ms']:>8.2f} "
                     f"{entry['samples_per_s']:>10,.0f} {entry['overhead_ms']:>11.2f} "
                     f"{ratio:>7.2f} {scaling:>8.2f}")
    lines.append(f"# ringrt vs gloo replicas: #wrong {result['wrong']} (largest gap "
                 f"{result['max_param_gap']:.2g})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
