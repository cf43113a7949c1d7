"""Rank side of benchmarks/cluster/collectives.py and benchmarks/cluster/cost_model.py: time
collectives over a sweep of message sizes, each under an explicitly forced algorithm (the cost
model needs to know which algorithm produced every time).

Run under ringrun, on one host or many::

    ringrun -n 3 -m benchmarks.cluster._sweep --ops all_reduce:ring,broadcast:chain \
        --max-bytes 64MiB --out /tmp/sweep.json

Every case: warm-up, then samples; a sample is ``batch`` back-to-back ops between barriers
(batch grows for small messages so a sample lasts ~20 ms) and its time is the slowest rank's
(MAX over ranks, reduced after the timed loop). One more, untimed run of every case is checked
(``wrong``: the most bad elements on any rank). ``cpu`` is the busiest rank's CPU time (all
threads, zmq's included) over its wall time in the samples. Rank 0 writes the JSON.
"""

from __future__ import annotations

import json
import math
import os
import resource
import socket
import statistics
import time

import click
import numpy as np

import ringrt as dist
from benchmarks.common import _machine
from benchmarks.common._table import parse_size, sweep

MIN_SAMPLE_S = 0.02          # batch small ops until one sample lasts this long
# op:algorithm; "default" means: do not force, let ringrt choose (recorded as "chosen").
ALL_CASES = ("all_reduce:default,all_reduce:ring,all_reduce:recursive_doubling,"
             "broadcast:binomial,broadcast:chain,reduce:binomial,reduce:ring,"
             "all_gather:ring,all_gather:direct,reduce_scatter:ring,reduce_scatter:direct,"
             "barrier:default")


class Case:
    """One (op, size): buffers, the call, and the check. ``nbytes`` is the op's size as
    nccl-tests count it: the array for all_reduce/broadcast/reduce, the whole output of
    all_gather, the whole input of reduce_scatter. float32 inputs hold rank + 1."""

    def __init__(self, op: str, nbytes: int, rank: int, world: int):
        self.op, self.rank, self.world = op, rank, world
        blocks = world if op in ("all_gather", "reduce_scatter") else 1
        count = max(1, nbytes // 4 // blocks)
        self.nbytes = 0 if op == "barrier" else count * 4 * blocks
        self.input = np.full(count * (world if op == "reduce_scatter" else 1), rank + 1.0,
                             np.float32)
        self.output = np.zeros(count * world if op == "all_gather" else count, np.float32)
        self.work = self.input.copy()

    def reset(self, timed: bool = True) -> None:
        """Timed runs reduce zeros, so back-to-back in-place sums neither overflow nor turn
        subnormal; the checked run gets the real inputs."""
        if self.op in ("all_reduce", "broadcast", "reduce"):
            self.work[:] = 0.0 if timed and self.op != "broadcast" else self.input

    def run(self) -> None:
        op = self.op
        if op == "all_reduce":
            dist.all_reduce(self.work)
        elif op == "broadcast":
            dist.broadcast(self.work, src=0)
        elif op == "reduce":
            dist.reduce(self.work, dst=0)
        elif op == "all_gather":
            dist.all_gather_into_tensor(self.output, self.input)
        elif op == "reduce_scatter":
            dist.reduce_scatter_tensor(self.output, self.input)
        else:
            dist.barrier()

    def wrong(self) -> int:
        """Elements of this rank's last result that differ from NumPy's answer."""
        total = self.world * (self.world + 1) / 2
        if self.op == "all_reduce" or (self.op == "reduce" and self.rank == 0):
            return int((self.work != total).sum())
        if self.op == "broadcast":
            return int((self.work != 1.0).sum())
        if self.op == "all_gather":
            want = np.repeat(np.arange(1, self.world + 1, dtype=np.float32), self.input.size)
            return int((self.output != want).sum())
        if self.op == "reduce_scatter":
            return int((self.output != total).sum())
        return 0


def force(op: str, algorithm: str) -> None:
    """RINGRT_ALGO is read at every op, so one process can go through every algorithm."""
    os.environ.pop("RINGRT_ALGO", None)
    if algorithm != "default":
        os.environ["RINGRT_ALGO"] = f"{op}={algorithm}"


def chosen(case: Case) -> str:
    """The algorithm ringrt runs for ``case`` here: one more call (every rank, after the timed
    ones), and the entry of ``ringrt.stats()["algorithms"]`` that call counted ("?" if none)."""
    before = dist.stats()["algorithms"]
    case.reset()
    case.run()
    after = dist.stats()["algorithms"]
    ran = [key.split("/", 1)[1] for key, times in after.items()
           if key.startswith(case.op + "/") and times > before.get(key, 0)]
    return ran[0] if len(ran) == 1 else "?"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def slowest(values: list[float]) -> list[float]:
    """Element-wise MAX over ranks (one collective, outside any timed region)."""
    array = np.array(values, np.float64)
    dist.all_reduce(array, op=dist.ReduceOp.MAX)
    return array.tolist()


def measure(case: Case, samples: int, budget_s: float) -> dict:
    """Warm up, agree on a batch size and sample count, then time the samples."""
    case.reset()
    dist.barrier()
    start = time.perf_counter()
    case.run()
    warm = slowest([time.perf_counter() - start])[0]
    batch = max(1, min(1000, math.ceil(MIN_SAMPLE_S / max(warm, 1e-6))))
    count = max(3, min(samples, int(budget_s / max(warm * batch, 1e-6))))
    times, cpu, wall = [], 0.0, 0.0
    for _ in range(count):
        case.reset()
        dist.barrier()
        cpu0, start = cpu_seconds(), time.perf_counter()
        for _ in range(batch):
            case.run()
        elapsed = time.perf_counter() - start
        cpu, wall = cpu + cpu_seconds() - cpu0, wall + elapsed
        times.append(elapsed / batch)
    case.reset(timed=False)     # in-place ops were re-run on their own output: check a fresh one
    case.run()
    wrong = int(slowest([case.wrong()])[0])
    times = slowest(times)
    return {"op": case.op, "nbytes": case.nbytes, "samples": count, "batch": batch,
            "median_s": statistics.median(times), "mean_s": statistics.fmean(times),
            "min_s": min(times), "wrong": wrong, "cpu": slowest([cpu / wall])[0]}


def _cases(ops: str, min_bytes: str, max_bytes: str, factor: int, interleave: bool):
    """(position in ``ops``, op, algorithm, nbytes) in op-major order, or size-major with
    ``interleave`` (barriers, which have no size, last)."""
    items = [(op, algorithm or "default") for op, _, algorithm in
             (item.partition(":") for item in ops.split(","))]
    sizes = sweep(max(4, parse_size(min_bytes)), parse_size(max_bytes), factor)
    cases = [(position, op, algorithm, nbytes) for position, (op, algorithm) in enumerate(items)
             for nbytes in ([0] if op == "barrier" else sizes)]
    if interleave:
        cases.sort(key=lambda case: (case[1] == "barrier", case[3], case[0]))
    return cases


@click.command()
@click.option("--ops", default=ALL_CASES, show_default=True,
              help="Comma-separated op:algorithm ('default' = ringrt's choice).")
@click.option("--min-bytes", default="4", show_default=True)
@click.option("--max-bytes", default="64MiB", show_default=True)
@click.option("--factor", default=2, show_default=True, help="Size step (powers of it).")
@click.option("--samples", default=20, show_default=True, help="Samples per case at most.")
@click.option("--budget", default=1.5, show_default=True,
              help="Seconds per case (fewer samples for big messages, at least 3).")
@click.option("--interleave", is_flag=True,
              help="Size-major order: every op:algorithm at one size, then the next size (so "
                   "slow drift of the lab does not favour the ops timed first).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Rank 0 writes the JSON here.")
def main(ops, min_bytes, max_bytes, factor, samples, budget, interleave, out_path):
    """Time every op:algorithm over the size sweep (see the module docstring)."""
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    settings = {k: v for k, v in os.environ.items()
                if k.startswith("RINGRT_") and k != "RINGRT_TOKEN"}
    hosts = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    results = []
    done = set()
    for position, op, algorithm, nbytes in _cases(ops, min_bytes, max_bytes, factor,
                                                  interleave):
        force(op, algorithm)
        case = Case(op, nbytes, rank, world)
        if (position, case.nbytes) in done:        # tiny sizes round up to one element per block
            continue
        done.add((position, case.nbytes))
        result = measure(case, samples, budget)
        results.append({"algorithm": algorithm, "chosen": chosen(case), **result})
        if rank == 0:
            print(f"{op:>15} {results[-1]['chosen']:>18} {result['nbytes']:>10} B "
                  f"{result['median_s'] * 1e3:10.3f} ms  wrong {result['wrong']}", flush=True)
    if rank == 0:
        record = {"world": world, "hosts": hosts, "machine": _machine.describe(),
                  "results": results, "env": settings}
        with open(out_path + ".tmp", "w") as f:
            json.dump(record, f, indent=1)
        os.replace(out_path + ".tmp", out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
