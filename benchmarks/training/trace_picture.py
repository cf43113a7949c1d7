"""The README's picture of a real trace: a 4-rank DDP run under ``ringrun --trace``, rendered.

There is no browser on the machines this project is built on, so Perfetto's UI cannot take
the screenshot; this script draws the same file Perfetto opens, in Perfetto's layout: one
block of rows per rank (its process), one row per thread or DDP bucket, each span a bar
coloured by what it is (ops by name, DDP buckets, optimizer steps). It shows a few training
steps from the middle of the run.

    python -m benchmarks.training.trace_picture  # runs the job, writes docs/trace.png
    python -m benchmarks.training.trace_picture --trace FILE      # renders an existing trace

The job is ``examples/train.py --epochs 1`` (the MLP on the digits: DDP with bucket
all-reduces overlapping the backward, then Adam) on 4 ranks; its trace is also written to
``docs/trace_example.json`` so it can be opened in https://ui.perfetto.dev.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click

from benchmarks.common import _paths

REPO = str(_paths.REPO)
PICTURE = os.path.join(REPO, "docs", "trace.png")
EXAMPLE = os.path.join(REPO, "docs", "trace_example.json")
COLOURS = {"ddp.sync": "#D0D0D0", "clock_sync": "#999999", "all_reduce": "#4C72B0",
           "broadcast": "#DD8452", "barrier": "#8172B3", "all_gather": "#55A868",
           "reduce_scatter": "#C44E52", "bucket": "#64B5CD", ".step": "#CCB974"}
LEGEND = {"all_reduce": "all_reduce (an op)", "bucket": "DDP bucket: ready -> reduced",
          "ddp.sync": "ddp.sync: waiting for buckets", ".step": "Adam.step"}


def run_job(path: str) -> None:
    command = [sys.executable, "-m", "ringrt_launcher", "-n", "4", "--trace", path,
               os.path.join(REPO, "examples", "train.py"), "--epochs", "1"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run(command, check=True, cwd=REPO, env=env, timeout=300)


def _colour(name: str) -> str:
    for key, colour in COLOURS.items():
        if key in name:
            return colour
    return "#888888"


def _short(row_name: str) -> str:
    return (row_name.replace(" (ready -> reduced)", "").replace("ringrt ops thread (async ops)",
                                                                 "ops thread (async)"))


def _with_depth(events: list[dict]):
    """Each event with its nesting depth in its row (ops inside ddp.sync or a step)."""
    by_row: dict = {}
    for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        by_row.setdefault((event["pid"], event["tid"]), []).append(event)
    for row in by_row.values():
        open_ends: list[float] = []
        for event in row:
            open_ends = [stop for stop in open_ends if stop > event["ts"]]
            yield event, len(open_ends)
            open_ends.append(event["ts"] + event["dur"])


def window(events: list[dict], first_step: int, steps: int) -> tuple[float, float]:
    """From the end of rank 0's optimizer step ``first_step`` to the end of ``steps`` more."""
    ends = sorted(e["ts"] + e["dur"] for e in events
                  if e["ph"] == "X" and e["pid"] == 0 and e["name"].endswith(".step"))
    if len(ends) < first_step + steps + 1:
        raise SystemExit(f"the trace has {len(ends)} optimizer steps on rank 0; need "
                         f"{first_step + steps + 1}")
    return ends[first_step] - 200, ends[first_step + steps] + 200


def render(trace: dict, output: str, first_step: int = 10, steps: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    events = trace["traceEvents"]
    start, end = window(events, first_step, steps)
    shown = [e for e in events if e["ph"] == "X" and e["ts"] < end and e["ts"] + e["dur"] > start]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("name") == "thread_name"}
    rows = sorted({(e["pid"], e["tid"]) for e in shown})
    y_of = {row: index for index, row in enumerate(rows)}
    figure, axes = plt.subplots(figsize=(14, 0.42 * len(rows) + 1.6))
    for event, depth in _with_depth(shown):
        y = y_of[(event["pid"], event["tid"])] + 0.2 * depth
        height = 0.8 - 0.4 * min(depth, 1)
        left, width = (event["ts"] - start) / 1000, event["dur"] / 1000
        axes.broken_barh([(left, width)], (y - height / 2, height),
                         color=_colour(event["name"]), edgecolor="black", linewidth=0.3)
        if width > (end - start) / 1000 / 30:
            axes.text(left + width / 2, y, event["name"].replace(" (waiting for buckets)", ""),
                      ha="center", va="center", fontsize=6.5, clip_on=True)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels([f"rank {pid}: {_short(names.get((pid, tid), str(tid)))}"
                          for pid, tid in rows], fontsize=7.5)
    axes.legend(handles=[Patch(color=COLOURS[key], label=label)
                         for key, label in LEGEND.items()],
                loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=4, fontsize=7.5)
    for boundary in [i for i in range(1, len(rows)) if rows[i][0] != rows[i - 1][0]]:
        axes.axhline(boundary - 0.5, color="black", linewidth=0.8)
    axes.invert_yaxis()
    axes.set_xlim(0, (end - start) / 1000)
    axes.set_xlabel("milliseconds (all ranks on rank 0's clock)")
    axes.set_title(f"ringrun -n 4 --trace: examples/train.py (DDP + Adam), {steps} training "
                   f"steps; our rendering of the trace file Perfetto opens", fontsize=10)
    axes.grid(axis="x", linewidth=0.3)
    figure.tight_layout()
    figure.savefig(output, dpi=130)


@click.command()
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), default=None,
              help="Render this trace instead of running the job.")
@click.option("--output", default=PICTURE, show_default=True, type=click.Path(dir_okay=False))
@click.option("--first-step", default=10, show_default=True)
@click.option("--steps", default=3, show_default=True)
def main(trace_path: str | None, output: str, first_step: int, steps: int) -> None:
    """Run (or read) the trace and draw a few steps of it."""
    if trace_path is None:
        trace_path = EXAMPLE
        run_job(trace_path)
    with open(trace_path) as file:
        trace = json.load(file)
    render(trace, output, first_step, steps)
    print(f"wrote {output} from {trace_path}")


if __name__ == "__main__":
    main()
