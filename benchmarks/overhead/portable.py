"""The portable shared-memory path against Linux's: what a Mac (no futexes, ``shm_open``
names) would pay, measured on Linux by forcing it.

::

    python -m benchmarks.overhead.portable --worlds 2,4 --json benchmarks/results/portable.json

Four modes, each a separate ``ringrun`` job of ``benchmarks.collectives.sweep`` (all_reduce,
float32), taken in turns for ``--rounds`` rounds so load from elsewhere hits them alike:
``linux`` (files in /dev/shm, futex waits), ``shm_open`` (RINGRT_SHM_OPEN=1), ``no_futex``
(RINGRT_NO_FUTEX=1: polling waits) and ``portable`` (both). Each point is the median over
rounds of the job's median; the table gives each mode's time over linux's (> 1: slower).
``shm_open`` changes only how segments are created and named, so it should sit at 1.0;
``no_futex`` changes how a rank waits for a late peer.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import click

from benchmarks.common import _machine

MODES = {
    "linux": {},
    "shm_open": {"RINGRT_SHM_OPEN": "1"},
    "no_futex": {"RINGRT_NO_FUTEX": "1"},
    "portable": {"RINGRT_SHM_OPEN": "1", "RINGRT_NO_FUTEX": "1"},
}


def run_job(world: int, sizes: str, budget: float, env: dict) -> dict[int, float]:
    """One ringrun job of the collectives benchmark; median µs by size."""
    with tempfile.TemporaryDirectory(prefix="rrp-") as scratch:
        out = os.path.join(scratch, "out.json")
        command = [sys.executable, "-m", "ringrt_launcher", "-n", str(world), "-m",
                   "benchmarks.collectives.sweep", "--op", "all_reduce", "--sizes", sizes,
                   "--rounds", "1", "--budget", str(budget), "--no-progress", "--json", out]
        subprocess.run(command, env={**os.environ, **env}, check=True, timeout=300,
                       stdout=subprocess.DEVNULL)
        with open(out) as f:
            records = json.load(f)["results"]
    if any(r["wrong"] for r in records):
        raise SystemExit(f"wrong results with {env}")
    return {r["bytes"]: r["median_us"] for r in records if r["system"] == "ringrt"}


@click.command()
@click.option("--worlds", default="2,4", show_default=True)
@click.option("--sizes", default="4,4K,64K,1M,16M", show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--budget", type=float, default=0.25, show_default=True,
              help="Seconds of timed calls per size and job.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(worlds, sizes, rounds, budget, json_path):
    machine = _machine.describe()
    click.echo(f"# {_machine.summary(machine)}")
    times: dict[tuple, list[float]] = {}
    for world in (int(w) for w in worlds.split(",")):
        for _ in range(rounds):
            for mode, env in MODES.items():
                for nbytes, us in run_job(world, sizes, budget, env).items():
                    times.setdefault((world, nbytes, mode), []).append(us)
    rows = []
    for (world, nbytes, mode), samples in sorted(times.items()):
        rows.append({"world": world, "bytes": nbytes, "mode": mode,
                     "median_us": statistics.median(samples), "rounds": samples})
    base = {(r["world"], r["bytes"]): r["median_us"] for r in rows if r["mode"] == "linux"}
    click.echo(f"{'world':>5} {'bytes':>9} " + " ".join(f"{m:>16}" for m in MODES))
    for world, nbytes in sorted(base):
        cells = []
        for mode in MODES:
            (row,) = [r for r in rows if (r["world"], r["bytes"], r["mode"]) ==
                      (world, nbytes, mode)]
            row["vs_linux"] = row["median_us"] / base[world, nbytes]
            cells.append(f"{row['median_us']:8.1f} ({row['vs_linux']:4.2f})")
        click.echo(f"{world:>5} {nbytes:>9} " + " ".join(f"{c:>16}" for c in cells))
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"benchmark": "portable", "machine": machine, "modes": MODES,
                       "results": rows}, f, indent=1)
        click.echo(f"# wrote {json_path}")


if __name__ == "__main__":
    main()
