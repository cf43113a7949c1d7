"""The all_reduce targets: float32 SUM at 4 B, 16 KiB, 1 MiB, 16 MiB and 64 MiB, at
world 2 or 4, ringrt against gloo (and Open MPI over TCP), PASS/FAIL per point.

Goal: ringrt <= 0.5x gloo (median and mean) at every size, and <= Open MPI tcp (median) from
1 MiB up. gloo is always measured live, in the same job, interleaved with ringrt; Open MPI
tcp is measured live when the job runs under ``mpirun --mca btl tcp,self``, else the reference
figure is used (marked ``*``; it was measured on a quieter machine, so treat it as a hint)::

    ringrun -n 2 -m benchmarks.collectives.targets
    ringrun -n 4 -m benchmarks.collectives.targets
    mpirun --oversubscribe --bind-to none --mca btl tcp,self -n 4 \\
        python -m benchmarks.collectives.targets                       # + Open MPI tcp, live
"""

from __future__ import annotations

import sys

import click

import ringrt as dist
from benchmarks.common import _backends, _machine, _measure, _table

SIZES = (4, 16 << 10, 1 << 20, 16 << 20, 64 << 20)
GLOO_FACTOR = 0.5                  # ringrt <= 0.5x gloo
MPI_FROM_BYTES = 1 << 20           # ringrt <= Open MPI tcp from 1 MiB up

# Reference medians in µs, measured when the targets were set (all_reduce float32 SUM), by
# world size, in SIZES order: gloo's for comparison, Open MPI tcp's when it is not run live.
REFERENCE_GLOO = {2: (49, 96, 261, 5994, 18675), 4: (235, 4169, 4048, 13547, 49943)}
REFERENCE_MPI_TCP = {2: (3.6, 7.8, 96, 2931, 26700), 4: (27, 38, 358, 10800, 63646)}


def verdict(ringrt: dict, gloo: dict | None, mpi_tcp_us: float | None, nbytes: int) -> list[str]:
    """The goals this point misses (empty: PASS)."""
    misses = []
    if gloo is not None:
        for stat in ("median_us", "mean_us"):
            if ringrt[stat] > GLOO_FACTOR * gloo[stat]:
                misses.append(f"{stat[:-3]} {ringrt[stat] / gloo[stat]:.2f}x gloo > "
                              f"{GLOO_FACTOR}")
    if nbytes >= MPI_FROM_BYTES and mpi_tcp_us is not None and ringrt["median_us"] > mpi_tcp_us:
        misses.append(f"median {ringrt['median_us'] / mpi_tcp_us:.2f}x mpi-tcp > 1")
    return misses


def format_report(records: list[dict], world: int) -> tuple[str, int]:
    """The targets table and the number of points that miss a goal."""
    lines = [f"# all_reduce targets: float32 sum, world {world}; times in us "
             "(median / mean over iterations of the slowest rank)",
             f"# {'size':>6} {'r/gloo med':>10} {'mean':>6} {'r/mpi':>6} {'ringrt med':>11} "
             f"{'mean':>9} {'gloo med':>10} {'mean':>9} {'mpi-tcp':>9}  verdict"]
    failed = 0
    for i, nbytes in enumerate(SIZES):
        at = [r for r in records if r["bytes"] == nbytes]
        ringrt = next(r for r in at if _table.is_ringrt(r["system"]))
        gloo = next((r for r in at if r["system"] == "gloo"), None)
        live_mpi = next((r for r in at if r["system"] == "mpi-tcp"), None)
        mpi_us = live_mpi["median_us"] if live_mpi else REFERENCE_MPI_TCP.get(world, (None,) * 5)[i]
        misses = verdict(ringrt, gloo, mpi_us, nbytes)
        failed += bool(misses)
        g_med, g_mean = (gloo["median_us"], gloo["mean_us"]) if gloo else (None, None)
        lines.append(
            f"  {_table.format_size(nbytes):>6} "
            f"{_num(_table.ratio(ringrt['median_us'], g_med), 10, 2)} "
            f"{_num(_table.ratio(ringrt['mean_us'], g_mean), 6, 2)} "
            f"{_num(_table.ratio(ringrt['median_us'], mpi_us), 6, 2)} "
            f"{ringrt['median_us']:11.1f} {ringrt['mean_us']:9.1f} {_num(g_med, 10)} "
            f"{_num(g_mean, 9)} {_num(mpi_us, 8)}{' ' if live_mpi or mpi_us is None else '*'}  "
            + ("PASS" if not misses else "FAIL: " + "; ".join(misses)))
    if world in REFERENCE_GLOO:
        lines.append("# reference gloo medians: "
                     + ", ".join(f"{_table.format_size(b)} {us}" for b, us in
                                 zip(SIZES, REFERENCE_GLOO[world], strict=True)))
    if not any(r["system"] == "mpi-tcp" for r in records):
        lines.append("# * = reference Open MPI tcp figure (not measured in this job)")
    lines.append(f"# {len(SIZES) - failed} of {len(SIZES)} points PASS")
    return "\n".join(lines), failed


def _num(value: float | None, width: int, digits: int = 1) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


@click.command()
@click.option("--budget", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Seconds of timed iterations per point and system.")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True,
              help="Turns each system takes at each size (spreads load bursts evenly).")
@click.option("--no-gloo", is_flag=True, help="Skip gloo (ringrt and MPI only).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
@click.option("--strict", is_flag=True, help="Exit 1 if any point misses a goal.")
def main(budget, rounds, no_gloo, json_path, strict):
    """Measure the all_reduce target points and say which targets pass."""
    wanted = {"mpi"} | (set() if no_gloo else {"gloo"})
    systems, skipped = _backends.open_systems(wanted)
    rank, world = dist.get_rank(), dist.get_world_size()
    plan = _measure.Budget(seconds=budget)
    records = [rec for nbytes in SIZES
               for rec in _measure.measure(systems, "all_reduce", nbytes, "float32", plan,
                                           "targets", rounds)]
    status = 0
    if rank == 0:
        for name, reason in skipped:
            click.echo(f"# skipped {name}: {reason}")
        text, failed = format_report(records, world)
        click.echo(f"# machine: {_machine.summary()}\n{text}")
        if json_path:
            with open(json_path, "w") as f:
                f.write(_table.json_text({
                    "benchmark": "targets", "world": world, "passed": len(SIZES) - failed,
                    "runs": [_backends.describe_run(f"targets-w{world}", skipped)],
                    "results": records}))
        wrong = sum(r["wrong"] for r in records)
        status = 1 if wrong or (strict and failed) else 0
    for system in reversed(systems):
        system.close()
    sys.exit(status)


if __name__ == "__main__":
    main()
