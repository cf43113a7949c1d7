"""How a small all_reduce's tail depends on how much Python it runs, on this machine.

A 4-byte all_reduce at world 2 takes a few microseconds; its p99 is set by the machine's
interruptions (``_noise``), which land in an op with a probability that grows with the op's
length and lengthen it by their own size (more in Python than in C: the interpreter runs
slowly for a while after each). So the ratio p99 / median is not a property of the code
alone: this benchmark measures it, in one job and interleaved round by round, for the real
op (``ringrt.all_reduce`` on a NumPy array, the fast path) and for the fast path's C steps
alone (stage, signal, wait, reduce, release: ``ringrt.debug.steps_only_times``) after a fixed
run of plain Python of 0 to 16 µs, which spans the op lengths in between. The slowest
rank's time per op (max over ranks), as ``benchmarks.collectives.sweep`` counts it::

    ringrun -n 2 -m benchmarks.overhead.tail_floor --json benchmarks/results/tail_floor-w2.json
"""

from __future__ import annotations

import functools
import json
import time

import click
import numpy as np

import ringrt
from benchmarks.common import _machine, _measure, _noise
from ringrt import debug

PYTHON_NS = (0, 1_000, 2_000, 4_000, 8_000, 16_000)
REAL = "ringrt.all_reduce (NumPy, fast path)"


def _real_op_times(ops: int) -> np.ndarray:
    """ns of each of ``ops`` 4-byte all_reduces, timed as the sweep times them."""
    call = functools.partial(ringrt.all_reduce, np.zeros(1, dtype=np.float32))
    return (_measure._timed(call, ringrt.barrier, ops) * 1e9).astype(np.int64)


def _slowest_rank(times: np.ndarray) -> np.ndarray:
    ringrt.all_reduce(times, op=ringrt.ReduceOp.MAX)
    return times


def _mode_name(python_ns: int) -> str:
    return f"C steps after {python_ns / 1000:g} µs of Python"


def measure(ops: int, rounds: int) -> dict[str, np.ndarray]:
    """Every mode's per-op times (slowest rank, ns), ``rounds`` rounds of ``ops`` each, the
    modes taking turns within each round."""
    modes = {REAL: lambda: _real_op_times(ops)}
    for python_ns in PYTHON_NS:
        modes[_mode_name(python_ns)] = \
            lambda python_ns=python_ns: debug.steps_only_times(ops, python_ns)
    for run in modes.values():                     # warm-up (and the loops' calibration)
        run()
    times: dict[str, list] = {name: [] for name in modes}
    for _ in range(rounds):
        for name, run in modes.items():
            ringrt.barrier()
            times[name].append(_slowest_rank(run()))
    return {name: np.concatenate(parts) for name, parts in times.items()}


def summarize(times: dict[str, np.ndarray]) -> list[dict]:
    rows = []
    for name, ns in times.items():
        us = ns / 1e3
        median = float(np.median(us))
        p99 = float(np.percentile(us, 99))
        rows.append({"mode": name, "ops": int(us.size), "median_us": median,
                     "p90_us": float(np.percentile(us, 90)), "p99_us": p99,
                     "p99_over_median": p99 / median,
                     "over_3x_median_pct": float((us > 3 * median).mean() * 100),
                     "max_us": float(us.max())})
    return rows


@click.command()
@click.option("--ops", default=20_000, show_default=True, help="Ops per mode and round.")
@click.option("--rounds", default=5, show_default=True, help="Rounds (modes interleaved).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the record here (rank 0).")
def main(ops: int, rounds: int, json_path: str | None) -> None:
    """p99 / median of a small all_reduce and of its C steps after 0-16 µs of Python."""
    ringrt.init_process_group()
    if ringrt.get_world_size() != 2:
        raise click.UsageError("run it at world 2: ringrun -n 2 -m benchmarks.overhead.tail_floor")
    noise = {"start": _noise.on_every_rank()}
    rows = summarize(measure(ops, rounds))
    noise["end"] = _noise.on_every_rank()
    if ringrt.get_rank() == 0:
        _report(rows, noise, ops, rounds, json_path)
    ringrt.destroy_process_group()


def _report(rows: list[dict], noise: dict, ops: int, rounds: int, json_path) -> None:
    machine = _machine.describe()
    click.echo(f"# {_machine.summary(machine)}")
    for when, ranks in noise.items():
        click.echo(f"# noise at {when}: {_noise.summary(ranks)}")
    click.echo(f"# all_reduce float32 4 B, world 2, shared memory; {rounds} rounds x {ops} ops "
               "per mode; slowest rank per op")
    click.echo(f"{'mode':<40} {'median µs':>9} {'p99 µs':>8} {'p99/median':>10} "
               f"{'> 3x median':>11}")
    for row in rows:
        click.echo(f"{row['mode']:<40} {row['median_us']:>9.2f} {row['p99_us']:>8.2f} "
                   f"{row['p99_over_median']:>10.2f} {row['over_3x_median_pct']:>10.2f}%")
    if json_path:
        with open(json_path, "w") as file:
            json.dump({"benchmark": "tail_floor",
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "machine": machine, "world": 2, "bytes": 4, "ops_per_round": ops,
                       "rounds": rounds, "noise": noise, "rows": rows}, file, indent=1)
        click.echo(f"# wrote {json_path}")


if __name__ == "__main__":
    main()
