"""Collective benchmark: the nccl-tests table for ringrt, and for torch gloo and Open MPI in
the same job, interleaved size by size.

::

    ringrun -n 4 -m benchmarks.collectives.sweep  # all_reduce, 4 B .. 64 MiB
    ringrun -n 4 -m benchmarks.collectives.sweep --op all --compare gloo --json out.json --plot out.png
    mpirun --oversubscribe --bind-to none -n 4 python -m benchmarks.collectives.sweep --compare gloo,mpi
    mpirun ... --mca btl tcp,self ... --compare gloo,mpi            # MPI over TCP
    python -m benchmarks.collectives.compare  # all of it, merged (make bench)

Each point: every system warms up; then the systems take turns (``--rounds``, default 3, so
load from elsewhere on a shared machine hits them alike), each turn a barrier, three untimed
calls (the caches, after another system's turn), a timed loop (per-rank times of each call)
and a barrier; an iteration's time is the slowest rank's (max
over ranks after the loops); ``time`` is the median over iterations, ``mean`` the mean,
``p99`` the 99th percentile and ``stall`` the iterations over 5x the median (the JSON also
has p50/p90, max and the share of the time stalls took, and for ringrt the shared-memory
waits, sleeps, timeouts and missed wake-ups of the timed loops, summed over ranks);
``algbw``/``busbw`` follow nccl-tests; the iteration count fills ``--budget`` seconds (many
for small messages, few for large). Then one more call on known inputs is checked against
NumPy (``#wrong``: wrong elements, all ranks). Before the first point and after the last,
every rank at once counts the times its core was taken away (``_noise``: gaps in a busy
loop), printed and kept in the JSON beside the machine: the floor under a small op's tail.
``ringrt/x`` is ringrt's median time over x's at the same size (< 1: ringrt is faster).
Calls run back to back, as in nccl-tests, so a system whose broadcast root may run ahead of
the receivers (Open MPI's eager sends for small messages) shows its throughput there, not
its latency.

MPI runs only when mpirun started the job (under ringrun MPI_Init would be a singleton);
under mpirun without ``MASTER_PORT``, ringrt's rendezvous goes through MPI (rank 0 hosts the
store on a free port). Systems that cannot run here are skipped, and the output says why.
Exit status 1 if any result was wrong.
"""

from __future__ import annotations

import os
import sys

import click

import ringrt as dist
from benchmarks.common import _backends, _machine, _measure, _noise, _table
from benchmarks.common._progress import Progress

DTYPES = ("float32", "float64", "int32", "int64")


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


@click.command()
@click.option("--op", "op_name", type=click.Choice((*_table.OPS, "all")), default="all_reduce",
              show_default=True)
@click.option("--min-bytes", "-b", default="4", show_default=True, help="Smallest size (16K, 1M).")
@click.option("--max-bytes", "-e", default="64M", show_default=True, help="Largest size.")
@click.option("--step-factor", "-f", type=click.IntRange(2, 1024), default=2, show_default=True,
              help="Multiply the size by this between points (nccl-tests -f).")
@click.option("--sizes", default=None, help="Explicit sizes instead of a sweep: 4,16K,1M.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option("--iters", "-n", type=click.IntRange(1), default=None,
              help="Timed iterations per point and system, rounded up to a multiple of "
                   "--rounds (default: fill --budget).")
@click.option("--warmup", "-w", type=click.IntRange(0), default=None,
              help="Warm-up iterations per point (default: 10 small, 2-3 large).")
@click.option("--budget", type=click.FloatRange(0.001), default=0.25, show_default=True,
              help="Seconds of timed iterations per point and system (5 to 2000 iterations).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Split each point's timed iterations into this many turns per system.")
@click.option("--compare", "compare", default="", metavar="gloo,mpi",
              help="Also run these systems, interleaved per size: gloo, mpi, torch-ringrt "
                   "(torch.distributed over the ringrt backend; needs gloo).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write the records here (rank 0).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Plot busbw and time vs size here (PNG; needs matplotlib).")
@click.option("--run-label", default=None,
              help="Names this run in the JSON (default: launcher, MPI transport, world).")
@click.option("--ringrt-label", default="ringrt", show_default=True,
              help="Name ringrt's rows, e.g. ringrt-zmq under RINGRT_NO_SHM=1.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on rank 0's stderr.")
def main(op_name, min_bytes, max_bytes, step_factor, sizes, dtype, iters, warmup, budget,
         rounds, compare, json_path, plot_path, run_label, ringrt_label, progress):
    """Time collectives over a sweep of sizes; print the nccl-tests table."""
    wanted = set(_split(compare))
    known = {"gloo", "mpi", "torch-ringrt"}
    if wanted - known:
        raise click.BadParameter(f"unknown systems {sorted(wanted - known)}; "
                                 "choose from gloo, mpi, torch-ringrt (torch.distributed over "
                                 "the ringrt backend; needs gloo)", param_hint="--compare")
    ops = _table.OPS if op_name == "all" else (op_name,)
    if sizes:
        size_list = [_table.parse_size(s) for s in _split(sizes)]
    else:
        size_list = _table.sweep(_table.parse_size(min_bytes), _table.parse_size(max_bytes),
                                 step_factor)
    plan = _measure.Budget(seconds=budget, iters=iters, warmup=warmup)
    systems, skipped = _backends.open_systems(wanted)
    systems[0].name = ringrt_label
    rank, world = dist.get_rank(), dist.get_world_size()
    run_id = run_label or default_run_label(systems, world)
    if rank == 0:
        click.echo(header(systems, skipped, world, run_id))
    noise = {"start": _noise.on_every_rank()}
    records = sweep(systems, ops, size_list, dtype, plan, run_id, rounds, progress and rank == 0)
    noise["end"] = _noise.on_every_rank()
    if rank == 0:
        report(records, systems, skipped, run_id, json_path, plot_path, noise)
    for system in reversed(systems):
        system.close()
    sys.exit(1 if any(r["wrong"] for r in records) else 0)


def sweep(systems, ops, sizes, dtype, plan, run_id, rounds, show_progress) -> list[dict]:
    """Every (op, size), the systems taking turns at each size (``rounds`` turns each) before
    the next size. Rank 0 prints each op's table when the op is done."""
    records = []
    with Progress(len(ops) * len(sizes), show_progress) as bar:
        for op in ops:
            op_records = []
            for size in sizes:
                op_records += _measure.measure(systems, op, size, dtype, plan, run_id, rounds)
                bar.advance(f"{op} {_table.format_size(size)}")
            if dist.get_rank() == 0:
                click.echo(_table.format_table(op_records))
                click.echo(_table.shm_lines(op_records))
            records += op_records
    return records


def default_run_label(systems, world: int) -> str:
    where = _backends.launcher()
    mpi = next((s.name for s in systems if s.name.startswith("mpi")), None)
    return f"{where}-{mpi}-w{world}" if mpi else f"{where}-w{world}"


def header(systems, skipped, world: int, run_id: str) -> str:
    lines = [f"# ringrt collective benchmark: world {world}, launched by "
             f"{_backends.launcher()}, run {run_id}",
             f"# machine: {_machine.summary()}",
             f"# systems: {', '.join(s.name for s in systems)}"]
    lines += [f"# skipped {name}: {reason}" for name, reason in skipped]
    return "\n".join(lines) + "\n"


def report(records, systems, skipped, run_id, json_path, plot_path, noise: dict) -> None:
    wrong = sum(r["wrong"] for r in records)
    click.echo(f"# #wrong total: {wrong}" + ("" if not wrong else "  -- RESULTS ARE WRONG"))
    for when, ranks in noise.items():
        click.echo(f"# noise at {when} (every rank at once): {_noise.summary(ranks)}")
    for name, reason in skipped:
        click.echo(f"# skipped {name}: {reason}")
    if json_path:
        write_json(json_path, records, skipped, run_id, noise)
        click.echo(f"# wrote {json_path}")
    if plot_path:
        from benchmarks.collectives import plot

        try:
            plot.plot(records, plot_path, title=f"run {run_id}")
            click.echo(f"# wrote {plot_path}")
        except ImportError:
            click.echo(f"# skipped the plot: matplotlib is not installed: "
                       f"{_backends.COMPARE_HINT}")


def write_json(path: str, records: list[dict], skipped, run_id: str, noise: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(_table.json_text({"benchmark": "collectives",
                                  "runs": [_backends.describe_run(run_id, skipped, noise)],
                                  "results": records}))


if __name__ == "__main__":
    main()
