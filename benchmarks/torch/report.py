"""Markdown tables (for the README) from the torch benchmarks' JSON files.

::

    python -m benchmarks.torch.report            # reads benchmarks/results/torch_*.json

Collectives: for every op and world, the worst (largest) ratio ringrt/gloo over the sizes,
median and mean, and the ratio at a few sizes. Training step: per world, the step times,
samples/s, communication overhead (step minus the no-communication step) and its ratio to
gloo's, and scaling efficiency against world 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from benchmarks.common import _machine, _table
from benchmarks.common._paths import RESULTS

SHOWN_SIZES = (16 << 10, 1 << 20, 16 << 20)    # after the smallest size measured


@click.command()
@click.option("--collectives", type=click.Path(dir_okay=False),
              default=str(RESULTS / "torch_collectives.json"), show_default=True)
@click.option("--train-step", type=click.Path(dir_okay=False),
              default=str(RESULTS / "torch_train_step.json"), show_default=True)
def main(collectives, train_step):
    """Print the README tables."""
    if Path(collectives).exists():
        click.echo(collectives_table(json.loads(Path(collectives).read_text())))
    if Path(train_step).exists():
        click.echo(train_step_table(json.loads(Path(train_step).read_text())))


def _pairs(records):
    by_size = {}
    for r in records:
        by_size.setdefault(r["bytes"], {})[r["system"]] = r
    return sorted((size, pair) for size, pair in by_size.items() if len(pair) == 2)


def collectives_table(doc: dict) -> str:
    lines = []
    for run in doc["runs"]:
        lines += [f"\nWorld {run['world']} ({_machine.summary(run['machine'])}), torch "
                  f"{run['torch']}; ratio = ringrt time / gloo time, median (mean):", "",
                  "| op | worst over sizes | smallest | " + " | ".join(
                      _table.format_size(s) for s in SHOWN_SIZES) + " |",
                  "|---|---:|---:|" + "---:|" * len(SHOWN_SIZES)]
        ops = dict.fromkeys(r["op"] for r in run["records"])
        for op in ops:
            pairs = _pairs([r for r in run["records"] if r["op"] == op])
            ratios = {size: (p["ringrt"]["median_us"] / p["gloo"]["median_us"],
                             p["ringrt"]["mean_us"] / p["gloo"]["mean_us"]) for size, p in pairs}
            worst = (max(m for m, _ in ratios.values()), max(a for _, a in ratios.values()))
            cells = [f"{ratios[s][0]:.2f} ({ratios[s][1]:.2f})" if s in ratios else ""
                     for s in (min(ratios), *SHOWN_SIZES)]
            lines.append(f"| {op} | {worst[0]:.2f} ({worst[1]:.2f}) | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def train_step_table(doc: dict) -> str:
    runs = doc["runs"]
    base = next((r for r in runs if r["world"] == 1), None)
    first = runs[0]
    lines = [f"\nDDP step, MLP {'-'.join(map(str, first['sizes']))} ({first['params'] / 1e6:.2f}"
             f" M params), {first['batch_per_rank']} samples per rank "
             f"({_machine.summary(first['machine'])}):", "",
             "| world | system | step ms (median / mean) | samples/s | comm. overhead ms | "
             "overhead ÷ gloo's | scaling |", "|---:|---|---:|---:|---:|---:|---:|"]
    for run in runs:
        stats = run["systems"]
        for name, entry in stats.items():
            ratio = entry["overhead_ms"] / stats["gloo"]["overhead_ms"] \
                if name != "local" and stats["gloo"]["overhead_ms"] > 0 else None
            scaling = entry["samples_per_s"] / (run["world"] * base["systems"][name]
                                                ["samples_per_s"]) if base else None
            lines.append(f"| {run['world']} | {name} | {entry['median_ms']:.2f} / "
                         f"{entry['mean_ms']:.2f} | {entry['samples_per_s']:,.0f} | "
                         f"{entry['overhead_ms']:.2f} | "
                         f"{'' if ratio is None else f'{ratio:.2f}'} | "
                         f"{'' if scaling is None else f'{scaling:.2f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
