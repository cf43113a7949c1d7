"""How often this machine interrupts a busy core, on every core at once.

One process per usable core, each bound to its core, runs ``_noise.interruptions`` for the
same seconds: a clock-reading loop in which every gap of 1 µs or more is time the process did
not run (kernel ticks and interrupts; on a VM, the hypervisor's exits and other guests). A
small collective waits for its slowest rank, so these gaps are the floor under its tail: see
docs/performance.md ("p99")::

    python -m benchmarks.overhead.machine_noise --seconds 2 --json benchmarks/results/noise.json
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import click

from benchmarks.common import _machine, _noise


def _probe(core: int, seconds: float, start_at: float, results) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    while time.time() < start_at:                 # every core starts together
        pass
    results.put((core, _noise.interruptions(seconds)))


def every_core(seconds: float) -> dict[int, dict]:
    """``_noise.interruptions`` on each usable core at once (forked processes, one per core)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start_at = time.time() + 0.5
    workers = [context.Process(target=_probe, args=(core, seconds, start_at, results))
               for core in cores]
    for worker in workers:
        worker.start()
    found = dict(results.get(timeout=seconds + 60) for _ in workers)
    for worker in workers:
        worker.join(timeout=10)
    return dict(sorted(found.items()))


def _period(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:g}"


@click.command()
@click.option("--seconds", default=2.0, show_default=True, help="How long each core is probed.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the record here.")
def main(seconds: float, json_path: str | None) -> None:
    """Count the gaps in a busy loop on every core at once, by size."""
    machine = _machine.describe()
    cores = every_core(seconds)
    click.echo(f"# {_machine.summary(machine)}")
    buckets = list(next(iter(cores.values()))["per_s"])
    click.echo("core  " + "  ".join(f"{b + '/s':>9}" for b in buckets)
               + "    total/s  stolen %  longest µs  >16 µs: median µs, every ms")
    for core, noise in cores.items():
        click.echo(f"{core:>4}  " + "  ".join(f"{noise['per_s'][b]:>9,}" for b in buckets)
                   + f"  {noise['total_per_s']:>9,}  {noise['stolen_pct']:>8.2f}"
                   + f"  {noise['longest_us']:>10,.1f}  {noise['long_gap_median_us']:>14.1f}"
                   + f"  {_period(noise['long_gap_period_ms']):>8}")
    click.echo(f"# {_noise.summary(list(cores.values()))}")
    if json_path:
        with open(json_path, "w") as file:
            json.dump({"benchmark": "machine_noise",
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "machine": machine, "seconds": seconds,
                       "cores": {str(core): noise for core, noise in cores.items()}},
                      file, indent=1)
        click.echo(f"# wrote {json_path}")


if __name__ == "__main__":
    main()
