"""Worker output: whole lines, prefixed with the rank on the console, raw in per-rank logs.

Each worker's stdout and stderr pipe is drained by its own thread (so a chatty rank never blocks
on a full pipe while another is being read) and split into lines; a line is written to the
console in one ``write`` under :class:`Console`'s lock, so lines of different ranks never mix
mid-line. A line longer than ``MAX_LINE_BYTES`` is cut into pieces, each prefixed.
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

    def write_line(self, stream: BinaryIO, line: bytes) -> None:
        """Write one complete line (ending in a newline) in one piece."""
        with self._lock:
            if id(stream) in self._gone:
                return
            try:
                stream.write(line)
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
        try:
            for line in iter(lambda: pipe.readline(MAX_LINE_BYTES), b""):
                if not line.endswith(b"\n"):
                    line += b"\n"              # last line without newline, or a cut long line
                self._emit(line, console_stream, is_err)
        except (OSError, ValueError):
            pass                                 # pipe closed under us at shutdown
        finally:
            pipe.close()

    def _emit(self, line: bytes, console_stream: BinaryIO, is_err: bool) -> None:
        if is_err:
            self.stderr_tail.append(line)
        if self.show:
            self.console.write_line(console_stream, self.prefix + line)
        if self._log is not None:
            with self._log_lock:
                if self._log is not None:
                    self._log.write(line)
                    self._log.flush()


def truncate_logs(log_dir: str, ranks) -> None:
    """Empty ``rank{R}.log`` for these ranks at job start (restarts then append)."""
    for rank in ranks:
        open(log_path(log_dir, rank), "wb").close()


def log_path(log_dir: str, rank: int) -> str:
    return os.path.join(log_dir, f"rank{rank}.log")
