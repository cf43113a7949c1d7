"""Tensor-parallel generation (TP=2) over "ringrt" against TP over gloo and one process, in
one job: pytorch#147596's case, where tensor parallelism on CPUs was slower than none.

::

    ringrun -n 2 -m benchmarks.torch.tp_generate --json benchmarks/results/torch_tp_generate.json

examples/torch_gpt.py's model (random weights: speed does not depend on training), split by
its Megatron plan (two all-reduces per block per token), generates ``--tokens`` characters
greedily, each a full forward over the last ``context`` characters (no cache), for each
``--dims`` width. Systems take turns, ``--rounds`` turns each (alternating order):

- ``one-process-1t`` / ``one-process-Nt``: rank 0 alone runs the whole model with 1 thread
  and with every usable core (the other rank waits in a gloo barrier, which sleeps);
- ``ringrt-tp2`` / ``gloo-tp2``: both ranks, one thread each, the model split over a mesh of
  the "ringrt" default group or over a gloo mesh of the same ranks.

A turn's time is the slowest rank's; the table gives the median tokens/s and its ratio to
gloo's TP and to one process. Every system must generate the same characters (``#wrong``:
tokens differing from the 1-thread single process's).
"""

from __future__ import annotations

import json
import os
import statistics
import time

import click
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import ringrt.torch  # noqa: F401 - registers the backend
from benchmarks.common import _machine
from examples.torch_gpt import GPTConfig, build, generate, tensor_parallel

SYSTEMS = ("one-process-1t", "one-process-Nt", "ringrt-tp2", "gloo-tp2")


@click.command()
@click.option("--dims", default="128,512", show_default=True, help="Model widths to sweep.")
@click.option("--layers", default=4, show_default=True)
@click.option("--heads", default=8, show_default=True)
@click.option("--context", default=64, show_default=True)
@click.option("--tokens", default=24, show_default=True, help="Tokens per turn.")
@click.option("--rounds", default=5, show_default=True, help="Turns per system.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(dims, layers, heads, context, tokens, rounds, json_path):
    """Time TP=2 generation over ringrt and gloo and one process (see the docstring)."""
    dist.init_process_group("ringrt")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != 2:
        raise click.UsageError(f"run with ringrun -n 2 (TP=2), got a world of {world}")
    gloo = dist.new_group(backend="gloo")
    results = []
    for dim in map(int, dims.split(",")):
        cfg = GPTConfig(vocab=96, context=context, dim=dim, heads=heads, layers=layers)
        results.append(measure(cfg, tokens, rounds, rank, gloo))
        if rank == 0:
            click.echo(format_table(results[-1]))
    if rank == 0 and json_path:
        doc = {"benchmark": "torch_tp_generate", "world": world, "torch": torch.__version__,
               "machine": _machine.describe(), "configs": results}
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(doc, f, indent=1)
        click.echo(f"# wrote {json_path}")
    dist.destroy_process_group()


def measure(cfg: GPTConfig, tokens: int, rounds: int, rank: int, gloo) -> dict:
    """Median tokens/s of every system for one model shape, and the tokens they made."""
    cores = len(os.sched_getaffinity(0))
    prompt = torch.arange(cfg.context) % cfg.vocab
    models = {"ringrt": tensor_parallel(build(cfg), init_device_mesh("cpu", (2,))).eval(),
              "gloo": tensor_parallel(build(cfg), init_device_mesh(
                  "cpu", (2,), mesh_dim_names=("tp",), backend_override={"tp": "gloo"})).eval()}
    single = build(cfg).eval()

    def run(name):
        if name.startswith("one-process"):
            threads = 1 if name.endswith("1t") else cores
            if rank == 0:
                torch.set_num_threads(threads)
                out = generate(single, prompt, tokens)
                torch.set_num_threads(1)
            else:
                out = None
            dist.barrier(group=gloo)          # the idle rank sleeps here (gloo does not spin)
            return out
        return generate(models[name.split("-")[0]], prompt, tokens)

    torch.set_num_threads(1)
    outputs = {name: run(name) for name in SYSTEMS}          # warm-up, and the tokens made
    times = {name: [] for name in SYSTEMS}
    for turn in range(rounds):
        for name in SYSTEMS if turn % 2 == 0 else SYSTEMS[::-1]:
            dist.barrier(group=gloo)
            started = time.perf_counter()
            run(name)
            times[name].append(slowest(time.perf_counter() - started, gloo))
    reference = outputs["one-process-1t"]
    wrong = 0
    if rank == 0:
        wrong = sum(int((outputs[name] != reference).sum()) for name in SYSTEMS)
    rates = {name: tokens / statistics.median(t) for name, t in times.items()}
    return {"dim": cfg.dim, "layers": cfg.layers, "heads": cfg.heads, "context": cfg.context,
            "params": sum(p.numel() for p in single.parameters()), "tokens": tokens,
            "rounds": rounds, "tokens_per_s": rates,
            "ringrt_over_gloo": rates["ringrt-tp2"] / rates["gloo-tp2"],
            "ringrt_over_one_process": rates["ringrt-tp2"] / max(rates["one-process-1t"],
                                                                 rates["one-process-Nt"]),
            "wrong": wrong}


def slowest(seconds: float, group) -> float:
    value = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=group)
    return float(value)


def format_table(result: dict) -> str:
    lines = [f"# machine: {_machine.summary()}",
             f"# TP=2 greedy generation: GPT dim {result['dim']}, {result['layers']} layers, "
             f"{result['heads']} heads, context {result['context']} "
             f"({result['params'] / 1e6:.2f} M params), {result['tokens']} tokens per turn, "
             f"{result['rounds']} turns each, interleaved",
             f"{'system':<16} {'tokens/s':>9} {'÷ gloo-tp2':>10}"]
    gloo_rate = result["tokens_per_s"]["gloo-tp2"]
    for name in SYSTEMS:
        rate = result["tokens_per_s"][name]
        lines.append(f"{name:<16} {rate:>9.1f} {rate / gloo_rate:>10.2f}")
    lines.append(f"# ringrt TP over the best single process: "
                 f"{result['ringrt_over_one_process']:.2f}x; #wrong {result['wrong']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
