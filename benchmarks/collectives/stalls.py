"""Stalls: many back-to-back ops per (op, size), their tail latency and the shm wait counters.

::

    ringrun -n 4 -m benchmarks.collectives.stalls                               # defaults below
    ringrun -n 8 -m benchmarks.collectives.stalls --ops all_reduce --sizes 4,1M,16M --iters 600
    ringrun -n 4 -m benchmarks.collectives.stalls --json benchmarks/results/stalls-w4.json

Each point: warm-up, a barrier, ``--iters`` calls back to back (per-rank time of each call),
a barrier; an iteration's time is the slowest rank's. Printed per point: p50 / p90 / p99 /
max and mean in µs, the number of *stalled* iterations (over 5x the median) and the share of
the total time they took, and what the ranks' shared-memory waits did meanwhile (summed over
ranks: sleeps, timeouts, missed wake-ups; see ``ringrt._comm.wakeups``). ``p2p`` is a ring
exchange (isend to the next rank, recv from the previous).
"""

from __future__ import annotations

import gc
import json
import time

import click
import numpy as np

import ringrt as dist
from benchmarks.common import _machine, _measure, _table

OPS = ("all_reduce", "broadcast", "barrier", "p2p")
COUNTERS = ("waits", "sleeps", "timeouts", "missed_wakeups", "overslept")


def _call(op: str, array: np.ndarray):
    rank, world = dist.get_rank(), dist.get_world_size()
    if op == "all_reduce":
        return lambda: dist.all_reduce(array)
    if op == "broadcast":
        return lambda: dist.broadcast(array, src=0)
    if op == "barrier":
        return dist.barrier
    received = np.empty_like(array)

    def ring():
        work = dist.isend(array, (rank + 1) % world)
        dist.recv(received, (rank - 1) % world)
        work.wait()
    return ring


class _GcPauses:
    """The garbage collector's pauses on this rank (a full collection can take milliseconds
    and stalls every peer waiting for this rank)."""

    def __init__(self):
        self.count, self.seconds, self.longest, self._start = 0, 0.0, 0.0, 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            pause = time.perf_counter() - self._start
            self.count += 1
            self.seconds += pause
            self.longest = max(self.longest, pause)

    def reset(self) -> None:
        self.count, self.seconds, self.longest = 0, 0.0, 0.0


_GC = _GcPauses()


def point(op: str, nbytes: int, iters: int, warmup: int) -> dict:
    array = np.zeros(max(1, nbytes // 4), np.float32)
    call = _call(op, array)
    for _ in range(warmup):
        call()
    before = _measure.shm_counters(COUNTERS)
    _GC.reset()
    times = np.empty(iters)
    clock = time.perf_counter
    dist.barrier()
    for i in range(iters):
        start = clock()
        call()
        times[i] = clock() - start
    dist.barrier()
    counted = _measure.shm_counters(COUNTERS) - before
    gc_pauses = np.array([_GC.count, _GC.seconds * 1e6, _GC.longest * 1e6])
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    dist.all_reduce(counted)                       # summed over ranks
    dist.all_reduce(gc_pauses, op=dist.ReduceOp.MAX)
    return {"op": op, "world": dist.get_world_size(), "nbytes": 0 if op == "barrier" else
            array.nbytes, "iters": iters, **_table.summarize(times.tolist()), "shm": dict(zip(COUNTERS, counted.tolist())),
            "gc": {"collections": int(gc_pauses[0]), "us": round(gc_pauses[1], 1),
                   "longest_us": round(gc_pauses[2], 1)},
            "worst": [[int(i), round(times[i] * 1e6, 1)] for i in np.argsort(times)[-3:]]}


def _line(record: dict) -> str:
    shm = record["shm"]
    return (f"{record['op']:>10} {record['nbytes']:>9} {record['p50_us']:>9.1f} "
            f"{record['p90_us']:>9.1f} {record['p99_us']:>9.1f} {record['max_us']:>9.1f} "
            f"{record['mean_us']:>9.1f} {record['stalled']:>5} {record['stalled_share']:>6.0%}"
            f" {shm['sleeps']:>7} {shm['timeouts']:>5} {shm['missed_wakeups']:>6}  "
            + " ".join(f"#{i}:{us:.0f}" for i, us in record["worst"])
            + f"  gc {record['gc']['collections']}x, longest {record['gc']['longest_us']:.0f}")


@click.command()
@click.option("--ops", default="all_reduce,broadcast,barrier,p2p", show_default=True,
              help=f"Comma-separated, of {', '.join(OPS)}.")
@click.option("--sizes", default="4,64K,1M,16M", show_default=True,
              help="Comma-separated sizes in bytes (16K, 1M).")
@click.option("--iters", type=click.IntRange(1), default=600, show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=20, show_default=True)
@click.option("--gc-freeze", is_flag=True,
              help="gc.freeze() after start-up: full collections skip what exists by then.")
@click.option("--json", "json_path", default=None, help="Write the records here (rank 0).")
def main(ops: str, sizes: str, iters: int, warmup: int, gc_freeze: bool,
         json_path: str | None) -> None:
    """Tail latency of back-to-back ops and the shared-memory wait counters."""
    dist.init_process_group()
    if gc_freeze:
        gc.freeze()
    rank, world = dist.get_rank(), dist.get_world_size()
    machine = _machine.describe() if rank == 0 else None
    if rank == 0:
        print(f"# stalls, world {world}, {iters} back-to-back calls per point; "
              f"{_machine.summary(machine)}")
        print(f"{'op':>10} {'bytes':>9} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} "
              f"{'max us':>9} {'mean us':>9} {'stall':>5} {'share':>6} {'sleeps':>7} "
              f"{'t/out':>5} {'missed':>6}  worst iterations #index:us", flush=True)
    records = []
    for op in [o.strip() for o in ops.split(",") if o.strip()]:
        if op not in OPS:
            raise click.BadParameter(f"unknown op {op!r}: one of {', '.join(OPS)}")
        for nbytes in ([0] if op == "barrier" else
                       [_table.parse_size(s) for s in sizes.split(",") if s.strip()]):
            record = point(op, nbytes, iters, warmup)
            records.append(record)
            if rank == 0:
                print(_line(record), flush=True)
    if rank == 0 and json_path:
        with open(json_path, "w") as out:
            json.dump({"machine": machine, "records": records}, out, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
