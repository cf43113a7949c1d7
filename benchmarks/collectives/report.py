"""Markdown tables (for the README) from ``make bench``'s collective records.

::

    python -m benchmarks.collectives.report  # reads benchmarks/results/collectives.json

Each mpirun invocation of ``benchmarks.collectives.compare`` runs ringrt, gloo and one Open MPI
transport interleaved: the ringrt, gloo and Open MPI shm columns come from the shared-memory run, the
Open MPI tcp column from the tcp run, and every ratio uses the ringrt time of the same run.
Ratios lead (they travel between machines; absolute times move with the machine's memory
bandwidth, which each run's line states).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmarks.common import _machine, _table
from benchmarks.common._paths import RESULTS

TABLE_SIZES = (4, 16 << 10, 1 << 20, 16 << 20, 64 << 20)


def run_lines(doc: dict) -> list[str]:
    """One line per run: when, on what machine, how loaded."""
    lines = []
    for run in doc["runs"]:
        machine = _machine.summary(run["machine"]) if "machine" in run else \
            f"{run.get('cpus', '?')} cores, copy bandwidth not recorded"
        lines.append(f"- `{run['run']}`: {run['date']}, {machine}, load average "
                     f"{run['loadavg_start'][0]:.1f} at start")
    return lines


def _by(records: list[dict], **match) -> dict:
    return {(r["world"], r["bytes"]): r for r in records
            if all(r[k] == v for k, v in match.items())}


def all_reduce_table(doc: dict) -> list[str]:
    """world x size: ratios to gloo and to Open MPI tcp, then median microseconds."""
    records = [r for r in doc["results"] if r["op"] == "all_reduce"]
    shm_runs = {r["run"] for r in records if r["system"] == "mpi-shm"} or \
        {r["run"] for r in records}
    shm = [r for r in records if r["run"] in shm_runs]
    tcp = [r for r in records if r["run"] not in shm_runs]
    ringrt, gloo = _by(shm, system="ringrt"), _by(shm, system="gloo")
    mpi_shm, mpi_tcp = _by(shm, system="mpi-shm"), _by(tcp, system="mpi-tcp")
    ringrt_tcp_run = _by(tcp, system="ringrt")
    lines = ["| world | size | ÷ gloo | ÷ Open MPI tcp | ringrt µs | gloo µs | Open MPI shm µs "
             "| Open MPI tcp µs |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(ringrt):
        world, nbytes = key
        if nbytes not in TABLE_SIZES:
            continue
        mine = ringrt[key]["median_us"]
        cells = [_ratio(mine, gloo.get(key)),
                 _ratio(ringrt_tcp_run.get(key, {}).get("median_us"), mpi_tcp.get(key)),
                 _us(mine), _us(gloo.get(key, {}).get("median_us")),
                 _us(mpi_shm.get(key, {}).get("median_us")),
                 _us(mpi_tcp.get(key, {}).get("median_us"))]
        lines.append(f"| {world} | {_table.human(nbytes)} | " + " | ".join(cells) + " |")
    return lines


def worst_ratios(doc: dict) -> list[str]:
    """Per op: the largest ringrt/gloo ratio over every size and run, median and mean."""
    lines = ["| op | worst ÷ gloo, median | worst ÷ gloo, mean |", "|---|---:|---:|"]
    for op in _table.OPS:
        worst = [0.0, 0.0]
        for run in {r["run"] for r in doc["results"]}:
            mine = _by([r for r in doc["results"] if r["run"] == run and r["op"] == op],
                       system="ringrt")
            theirs = _by([r for r in doc["results"] if r["run"] == run and r["op"] == op],
                         system="gloo")
            for key, rec in mine.items():
                if key in theirs:
                    worst[0] = max(worst[0], rec["median_us"] / theirs[key]["median_us"])
                    worst[1] = max(worst[1], rec["mean_us"] / theirs[key]["mean_us"])
        lines.append(f"| {op} | {worst[0]:.2f} | {worst[1]:.2f} |")
    return lines


def _ratio(mine, other) -> str:
    return f"{mine / other['median_us']:.2f}" if mine and other else "—"


def _us(value) -> str:
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


@click.command()
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              default=str(RESULTS / "collectives.json"), show_default=True)
def main(json_path):
    """Print the README's collective tables."""
    doc = json.loads(Path(json_path).read_text())
    click.echo("\n".join(run_lines(doc) + [""] + all_reduce_table(doc) + [""] +
                         worst_ratios(doc)))


if __name__ == "__main__":
    main()
