"""Rank 0's progress display, shared by the examples (train.py, torch_train.py), and the
per-step sample log every rank can keep (``--sample-log``, read by the chaos soak).

A click progress bar per epoch with the latest loss and samples/s, drawn on a terminal --
directly, or through ringrun, which draws carriage-return updates in place (it sets
``RINGRUN_TTY=1``). Elsewhere (logs, CI) the examples' per-epoch lines carry the same figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

import click

from ringrt import elastic


class _Bar:
    """Rank 0's click progress bar with the latest loss and throughput."""

    def __init__(self, bar):
        self.bar, self.status = bar, ""

    def show(self, loss: float, samples_per_s: float) -> None:
        self.status = f"loss {loss:.3f}, {samples_per_s:,.0f} samples/s"
        self.bar.update(1)


class _NoBar:
    def show(self, loss: float, samples_per_s: float) -> None:
        pass


class _TerminalThroughLauncher:
    """stdout as click sees it under ringrun on a terminal: ringrun draws our \r updates in
    place (it sets RINGRUN_TTY=1), so the bar may render although stdout is a pipe."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(text)

    def flush(self):
        self._stream.flush()

    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def progress(rank: int, length: int, label: str):
    """Rank 0's progress bar with loss and samples/s, on a terminal (directly, or through
    ringrun, which draws carriage-return updates in place). Elsewhere (logs, CI) the
    per-epoch lines carry the same figures."""
    through_launcher = os.environ.get("RINGRUN_TTY") == "1"
    if rank != 0 or not (sys.stdout.isatty() or through_launcher):
        yield _NoBar()
        return
    holder = _Bar(None)
    stream = _TerminalThroughLauncher(sys.stdout) if through_launcher else sys.stdout
    with click.progressbar(length=length, label=label, width=24, file=stream,
                           item_show_func=lambda _: holder.status) as bar:
        holder.bar = bar
        yield holder


def say(rank: int, message: str) -> None:
    if rank == 0:
        click.echo(message)


def sample_log(directory: str | None, rank: int):
    """``log(step, epoch, indices)``: append one JSON line per step to
    DIR/gen{G}-rank{R}.jsonl, the format the chaos soak reads (a no-op without a directory)."""
    if directory is None:
        return lambda *_: None
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"gen{elastic.generation()}-rank{rank}.jsonl")

    def log(step, epoch, indices):
        with open(path, "a") as out:
            out.write(json.dumps({"step": step, "epoch": epoch, "time": time.time(),
                                  "indices": [int(i) for i in indices]}) + "\n")
    return log
