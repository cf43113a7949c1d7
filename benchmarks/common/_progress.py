"""A click progress bar over the sweep, on rank 0's stderr.

Under ringrun and mpirun a worker's stderr is a pipe read line by line (ringrun prefixes each
line with the rank), where click draws nothing but the label. So off a terminal the bar is
printed as whole lines instead, at most one every ``LINE_EVERY_S`` seconds.
"""

from __future__ import annotations

import sys
import time

import click

LINE_EVERY_S = 5.0


class Progress:
    """``with Progress(total, enabled) as bar: bar.advance('all_reduce 4K gloo')``."""

    def __init__(self, total: int, enabled: bool, label: str = "sweep"):
        self.enabled = enabled
        self._bar = click.progressbar(length=total, label=label, file=sys.stderr, width=30,
                                      show_pos=True, show_eta=True,
                                      item_show_func=lambda item: item) if enabled else None
        self._lines = enabled and not sys.stderr.isatty()
        self._last_line = 0.0

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            if self._lines and exc_info[0] is None:
                self._print_line()
            self._bar.__exit__(*exc_info)

    def advance(self, what: str) -> None:
        """One point done; ``what`` names it (shown beside the bar)."""
        if self._bar is None:
            return
        self._bar.update(1, what)
        if self._lines and time.monotonic() - self._last_line >= LINE_EVERY_S:
            self._print_line()

    def _print_line(self) -> None:
        self._last_line = time.monotonic()
        click.echo(self._bar.format_progress_line(), file=sys.stderr)
