"""Plot collective benchmark records: per op, time and busbw vs size, one line per system
and world size (colour = system, line style = world). Needs matplotlib (Agg backend).

::

    python -m benchmarks.collectives.plot benchmarks/results/collectives.json -o collectives.png
"""

from __future__ import annotations

import json
import statistics

import click

from benchmarks.common import _table

COLOURS = {"ringrt": "#1f77b4", "gloo": "#ff7f0e", "mpi-shm": "#2ca02c", "mpi-tcp": "#d62728"}
STYLES = ["-", "--", ":", "-."]


def series(records: list[dict], op: str) -> dict[tuple[str, int], list[tuple[int, float]]]:
    """(system, world) -> [(bytes, median µs)], the median over runs where a system was
    measured in several (ringrt and gloo run in every mpirun of benchmarks.collectives.compare)."""
    points: dict[tuple[str, int], dict[int, list[float]]] = {}
    for rec in (r for r in records if r["op"] == op):
        by_size = points.setdefault((rec["system"], rec["world"]), {})
        by_size.setdefault(rec["bytes"], []).append(rec["median_us"])
    return {key: sorted((b, statistics.median(v)) for b, v in by_size.items())
            for key, by_size in points.items()}


def plot(records: list[dict], path: str, title: str = "") -> None:
    """Write the figure to ``path``. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [op for op in _table.OPS if any(r["op"] == op for r in records)]
    worlds = sorted({r["world"] for r in records})
    fig, axes = plt.subplots(len(ops), 2, figsize=(13, 3.8 * len(ops)), squeeze=False)
    for row, op in zip(axes, ops, strict=True):
        for (system, world), pts in sorted(series(records, op).items(), key=_legend_order):
            sizes = [b for b, _ in pts]
            busbw = [_table.bandwidths(op, b, us / 1e6, world)[1] for b, us in pts]
            style = dict(color=COLOURS.get(system), linestyle=STYLES[worlds.index(world) % 4],
                         marker="o", markersize=3, label=f"{system} w{world}")
            row[0].plot(sizes, [us for _, us in pts], **style)
            row[1].plot(sizes, busbw, **style)
        _decorate(row[0], f"{op}: time (median, slowest rank)", "time (µs)", log_y=True)
        _decorate(row[1], f"{op}: bus bandwidth", "busbw (GB/s)", log_y=False)
    axes[0][1].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.98 if title else 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _legend_order(item) -> tuple:
    (system, world), _ = item
    known = list(COLOURS)
    return (known.index(system) if system in known else len(known), system, world)


def _decorate(ax, title: str, ylabel: str, log_y: bool) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("size (bytes)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ticks = [t for t in (4, 64, 1 << 10, 16 << 10, 256 << 10, 4 << 20, 64 << 20, 1 << 30)]
    lo, hi = ax.get_xlim()
    ax.set_xticks([t for t in ticks if lo <= t <= hi])
    ax.set_xticklabels([_table.format_size(t) for t in ticks if lo <= t <= hi])


def load(paths) -> list[dict]:
    """The records of one or more JSON files written by collectives/compare."""
    records = []
    for path in paths:
        with open(path) as f:
            records += json.load(f)["results"]
    return records


@click.command()
@click.argument("json_files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--title", default="")
def main(json_files, output, title):
    """Plot one or more collective benchmark JSON files into one PNG."""
    plot(load(json_files), output, title)
    click.echo(f"wrote {output}")


if __name__ == "__main__":
    main()
