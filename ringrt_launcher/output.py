"""Worker output: whole lines, prefixed with the rank on the console, raw in per-rank logs.

Each worker's stdout and stderr pipe is drained by its own thread (so a chatty rank never blocks
on a full pipe while another is being read) and split into lines; a line is written to the
console in one ``write`` under :class:`Console`'s lock, so lines of different ranks never mix
mid-line. A line longer than ``MAX_LINE_BYTES`` is cut into pieces, each prefixed.

Text ending in a carriage return (a progress bar redrawing itself, e.g. ``click.progressbar``)
is an *update*: it is drawn in place on the console (``\r[RANK] text``) and not logged; the
next whole line from that rank replaces it, a line from another rank starts below it. Workers
are told ``RINGRUN_TTY=1`` when the console is a terminal, so they can draw such bars.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from typing import BinaryIO

MAX_LINE_BYTES = 64 * 1024
TAIL_LINES = 20            # stderr lines kept per rank for the failure summary


class Console:
    """The launcher's stdout and stderr, shared by every output thread.

    After the console goes away (a closed pipe, a hung-up terminal), lines are dropped but the
    workers' pipes are still drained, so no worker blocks on a full pipe.
    """

    def __init__(self, stdout: BinaryIO | None = None, stderr: BinaryIO | None = None):
        self.stdout = stdout or sys.stdout.buffer
        self.stderr = stderr or sys.stderr.buffer
        self._lock = threading.Lock()
        self._gone: set[int] = set()
        self._open_update: tuple[int, int] | None = None     # (stream id, rank) drawn in place

    def write_line(self, stream: BinaryIO, line: bytes, rank: int | None = None) -> None:
        """Write one complete line (ending in a newline) in one piece."""
        with self._lock:
            owner = self._take_update(stream)
            if owner is None:
                self._write(stream, line)
            elif owner == rank:                              # replaces this rank's bar
                self._write(stream, b"\r" + line[:-1] + self._clear(stream) + b"\n")
            else:                                            # leave the other rank's bar above
                self._write(stream, b"\n" + line)

    def write_update(self, stream: BinaryIO, text: bytes, rank: int) -> None:
        """Draw ``text`` in place of this rank's previous update (a progress bar)."""
        with self._lock:
            owner = self._take_update(stream)
            lead = b"\n" if owner is not None and owner != rank else b""
            self._write(stream, lead + b"\r" + text + self._clear(stream))
            self._open_update = (id(stream), rank)

    def _take_update(self, stream: BinaryIO) -> int | None:
        """The rank whose update is open on ``stream`` (and forget it), or None."""
        if self._open_update is None or self._open_update[0] != id(stream):
            return None
        owner = self._open_update[1]
        self._open_update = None
        return owner

    @staticmethod
    def _clear(stream: BinaryIO) -> bytes:
        return b"\x1b[K" if is_terminal(stream) else b""   # erase what a longer update left

    def _write(self, stream: BinaryIO, data: bytes) -> None:
        if id(stream) in self._gone:
            return
        try:
            stream.write(data)
            stream.flush()
        except (OSError, ValueError):      # BrokenPipeError, EIO after SIGHUP, closed
            self._gone.add(id(stream))

    def note(self, text: str) -> None:
        """A message from the launcher itself, one ``ringrun: `` line per line of text."""
        for line in text.splitlines():
            self.write_line(self.stderr, f"ringrun: {line}\n".encode(errors="replace"))


class RankOutput:
    """Drains one worker's stdout and stderr: console (prefixed), log file, stderr tail.

    Args:
        rank: the global rank, used in the ``[RANK] `` prefix and the log file name.
        console: where prefixed lines go.
        show: False to keep this rank off the console (``--local-ranks-filter``).
        log_path: ``DIR/rank{R}.log`` or None; opened for append (the supervisor truncates it
            when the job starts, so one file holds every restart).
    """

    def __init__(self, rank: int, console: Console, show: bool = True,
                 log_path: str | None = None):
        self.rank = rank
        self.console = console
        self.show = show
        self.prefix = f"[{rank}] ".encode()
        self.stderr_tail: collections.deque[bytes] = collections.deque(maxlen=TAIL_LINES)
        self._log = open(log_path, "ab") if log_path else None
        self._log_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self, stdout: BinaryIO, stderr: BinaryIO) -> None:
        """Start draining both pipes; they are closed when their writer is gone."""
        for pipe, console_stream, is_err in ((stdout, self.console.stdout, False),
                                             (stderr, self.console.stderr, True)):
            thread = threading.Thread(target=self._pump, args=(pipe, console_stream, is_err),
                                      name=f"rank{self.rank}-{'err' if is_err else 'out'}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s in all) for both pipes to reach EOF; True if they did."""
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def close(self) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.close()
                self._log = None

    def tail_text(self) -> list[str]:
        """The last stderr lines, decoded for the failure summary."""
        return [line.decode(errors="replace").rstrip("\n") for line in self.stderr_tail]

    def _pump(self, pipe: BinaryIO, console_stream: BinaryIO, is_err: bool) -> None:
        pending = b""
        try:
            for chunk in iter(lambda: pipe.read1(MAX_LINE_BYTES), b""):
                pending = self._split(pending + chunk, console_stream, is_err)
            if pending:
                self._emit(pending + b"\n", console_stream, is_err)   # last line, no newline
        except (OSError, ValueError):
            pass                                 # pipe closed under us at shutdown
        finally:
            pipe.close()

    def _split(self, data: bytes, console_stream: BinaryIO, is_err: bool) -> bytes:
        """Emit every whole line and in-place update in ``data``; return the unfinished rest."""
        start = 0
        while True:
            newline, carriage = data.find(b"\n", start), data.find(b"\r", start)
            ends = [i for i in (newline, carriage) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if end == carriage and data[end + 1:end + 2] == b"\n":     # "\r\n" is a line end
                self._emit(data[start:end] + b"\n", console_stream, is_err)
                start = end + 2
            elif end == carriage:
                if end > start and self.show:
                    self.console.write_update(console_stream, self.prefix + data[start:end],
                                              self.rank)
                start = end + 1
            else:
                self._emit(data[start:end + 1], console_stream, is_err)
                start = end + 1
        rest = data[start:]
        while len(rest) >= MAX_LINE_BYTES:           # a very long line: cut it, each piece prefixed
            self._emit(rest[:MAX_LINE_BYTES] + b"\n", console_stream, is_err)
            rest = rest[MAX_LINE_BYTES:]
        return rest

    def _emit(self, line: bytes, console_stream: BinaryIO, is_err: bool) -> None:
        if is_err:
            self.stderr_tail.append(line)
        if self.show:
            self.console.write_line(console_stream, self.prefix + line, self.rank)
        if self._log is not None:
            with self._log_lock:
                if self._log is not None:
                    self._log.write(line)
                    self._log.flush()


def is_terminal(stream) -> bool:
    """True if ``stream`` is a terminal (False for pipes, files, closed or fake streams)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def truncate_logs(log_dir: str, ranks) -> None:
    """Empty ``rank{R}.log`` for these ranks at job start (restarts then append)."""
    for rank in ranks:
        open(log_path(log_dir, rank), "wb").close()


def log_path(log_dir: str, rank: int) -> str:
    return os.path.join(log_dir, f"rank{rank}.log")
