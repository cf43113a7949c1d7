"""What seeing inside a job costs per op: the flight recorder (always on) and the timeline.

Two measurements, both in one process (a world of one rank: its ops run the whole Python path
of an op - validate, choose, sequence number, observer, exchange - and send nothing, so the
observer's share is not drowned in waiting for peers):

1. **end to end**: ``all_reduce`` of 4 bytes, rounds of ``--ops`` calls in four modes
   interleaved round by round: *none* (the observer replaced by one whose methods do
   nothing: the cost of the code before issue 12, up to three empty calls), *recorder* (the
   default: flight recorder on, timeline off), *tracing* (``RINGRT_TRACE``: timeline on, its
   rank file written every 2048 ops) and *recorder off* (``RINGRT_FLIGHT_RECORDER=0``).
   Per-op time is each round's total / ops; the table gives the median over rounds and the
   difference to *none*.
2. **parts** (``timeit``): the user's source line (``call_site``), one record into the ring,
   a whole op's observer calls, a tracer record including its share of formatting and
   writing, and the wait timer wrapped around each blocking receive while tracing.

Run: ``python -m benchmarks.trace_overhead`` (writes ``benchmarks/results/trace_overhead.json``).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time
import timeit

import click
import numpy as np

import ringrt as dist
from benchmarks import _machine
from ringrt._comm.wire import CODE_DTYPES
from ringrt._observe import site, timeline
from ringrt._observe.observer import Observer, _timed
from ringrt._observe.recorder import FlightRecorder

RESULT = os.path.join(os.path.dirname(__file__), "results", "trace_overhead.json")


class _NoObserver:
    """The observer's interface doing nothing: stands for the code without issue 12."""

    tracer = None

    def entered(self, *args):
        return None

    def started(self, record):
        pass

    def finished(self, record, failure):
        pass


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
    comm = dist.distributed._world.comm
    default = comm.observer
    tracer = timeline.Tracer(os.path.join(directory, "t.json"), 0, 1, CODE_DTYPES)
    traced = Observer(0, 1, CODE_DTYPES)
    traced.tracer = tracer
    recorder_off = Observer(0, 1, CODE_DTYPES)
    recorder_off.recorder = FlightRecorder(size=0)
    modes = {"none": _NoObserver(), "recorder": default, "tracing": traced,
             "recorder off": recorder_off}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    _per_op_us(ops)                                           # warm up
    for _ in range(rounds):
        for mode, observer in modes.items():
            comm.observer = observer
            times[mode].append(_per_op_us(ops))
    comm.observer = default
    tracer.close()
    dist.destroy_process_group()
    base = statistics.median(times["none"])
    return {mode: {"median_us": statistics.median(t), "min_us": min(t),
                   "added_us": statistics.median(t) - base, "rounds_us": t}
            for mode, t in times.items()}


def _deep_call(depth: int):
    """call_site from ``depth`` frames inside ringrt's package (as from a collective)."""
    return site.call_site(depth)


def parts(number: int, directory: str) -> dict:
    recorder = FlightRecorder()
    observer = Observer(0, 1, CODE_DTYPES)
    spec = type("Spec", (), {"name": "all_reduce", "dtype_code": 1, "count": 1,
                             "algorithm": "shm"})()

    def whole_op():
        record = observer.entered(0, 0, spec)
        observer.started(record)
        observer.finished(record, None)

    tracer = timeline.Tracer(os.path.join(directory, "p.json"), 0, 1, CODE_DTYPES)
    record = [0, 1, "all_reduce", 1, 1, "shm", ("train.py", 88, "main"), 0.0, 1.0, 2.0,
              "done", 0.5]
    timed_nothing = _timed(lambda: None)
    results = {
        "call_site": timeit.timeit(lambda: site.call_site(1), number=number),
        "ring_record": timeit.timeit(
            lambda: recorder.enter(0, 1, "all_reduce", 1, 1, "shm", site.UNKNOWN),
            number=number),
        "observer_calls_per_op": timeit.timeit(whole_op, number=number),
        "tracer_record_with_flush": timeit.timeit(lambda: tracer.op(record),
                                                  number=number),
        "wait_timer_per_blocking_wait": timeit.timeit(timed_nothing, number=number)
        - timeit.timeit(lambda: None, number=number),
        "empty_lambda_call": timeit.timeit(lambda: None, number=number),
    }
    tracer.close()
    observer.close()
    return {name: seconds / number * 1e6 for name, seconds in results.items()}


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
