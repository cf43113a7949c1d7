"""What seeing inside a job costs per op: the flight recorder (always on) and the timeline.

Two measurements, both in one process (a world of one rank: its ops run the whole Python path
of an op - validate, choose, sequence number, observer, exchange - and send nothing, so the
observer's share is not drowned in waiting for peers):

1. **end to end**: ``all_reduce`` of 4 bytes, rounds of ``--ops`` calls in four modes
   interleaved round by round: *none* (the observer replaced by one whose methods do
   nothing: the cost of the code without a flight recorder, up to three empty calls),
   *recorder* (the default: flight recorder on, timeline off), *tracing* (``RINGRT_TRACE``:
   timeline on, its rank file written every 2048 ops) and *recorder off*
   (``RINGRT_FLIGHT_RECORDER=0``).
   The observers come from ``ringrt.debug``. Per-op time is each round's total / ops; the
   table gives the median over rounds and the difference to *none*.
2. **parts** (``timeit``): the user's source line (``call_site``), one record into the ring,
   a whole op's observer calls, a tracer record including its share of formatting and
   writing, and the wait timer wrapped around each blocking receive while tracing.

Run: ``python -m benchmarks.overhead.trace_overhead`` (writes
``benchmarks/results/trace_overhead.json``).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time

import click
import numpy as np

import ringrt as dist
from benchmarks.common import _machine
from benchmarks.common._paths import RESULTS
from ringrt import debug

RESULT = str(RESULTS / "trace_overhead.json")


def _per_op_us(ops: int) -> float:
    x = np.ones(1, dtype=np.float32)
    start = time.perf_counter()
    for _ in range(ops):
        dist.all_reduce(x)
    return (time.perf_counter() - start) / ops * 1e6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def end_to_end(ops: int, rounds: int, directory: str) -> dict:
    dist.init_process_group(init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    modes = debug.observers(os.path.join(directory, "t.json"))
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    _per_op_us(ops)                                           # warm up
    for _ in range(rounds):
        for mode, observer in modes.items():
            debug.use_observer(observer)
            times[mode].append(_per_op_us(ops))
    debug.use_observer(modes["recorder"])
    debug.close_observers(modes)
    dist.destroy_process_group()
    base = statistics.median(times["none"])
    return {mode: {"median_us": statistics.median(t), "min_us": min(t),
                   "added_us": statistics.median(t) - base, "rounds_us": t}
            for mode, t in times.items()}


def parts(number: int, directory: str) -> dict:
    return debug.observer_part_costs(number, os.path.join(directory, "p.json"))


@click.command()
@click.option("--ops", default=5000, show_default=True, help="Calls per round and mode.")
@click.option("--rounds", default=15, show_default=True, help="Rounds (modes interleaved).")
@click.option("--number", default=200000, show_default=True, help="timeit calls per part.")
@click.option("--output", default=RESULT, show_default=True, type=click.Path(dir_okay=False))
def main(ops: int, rounds: int, number: int, output: str) -> None:
    """Measure and print the observer's per-op cost; write the JSON record."""
    machine = _machine.describe()
    with tempfile.TemporaryDirectory() as directory:
        whole = end_to_end(ops, rounds, directory)
        pieces = parts(number, directory)
    print(f"# {_machine.summary(machine)}")
    print("all_reduce 4 B, world 1: median us per op (added vs no observer)")
    for mode, row in whole.items():
        print(f"  {mode:<13} {row['median_us']:7.2f}  ({row['added_us']:+.2f})")
    print("parts, us per call (timeit; an empty lambda call costs "
          f"{pieces['empty_lambda_call']:.3f} us and is included in each):")
    for name, value in pieces.items():
        print(f"  {name:<30} {value:.3f}")
    record = {"benchmark": "trace_overhead", "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                    time.gmtime()),
              "machine": machine, "ops_per_round": ops, "rounds": rounds,
              "end_to_end": whole, "parts_us": pieces}
    with open(output, "w") as file:
        json.dump(record, file, indent=1)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
