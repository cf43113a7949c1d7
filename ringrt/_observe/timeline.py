"""The timeline: every op, DDP bucket and optimizer step of this rank as a Chrome-trace span.

``RINGRT_TRACE=FILE`` (``ringrun --trace FILE`` sets it) turns it on. Each rank appends what
it records to ``FILE.rank{R}.trace``: msgpack entries ``[kind, payload]`` written in chunks of
:data:`FLUSH_EVERY` ops, at close and whenever the flight recorder dumps (an error, SIGUSR1),
so a job killed afterwards still leaves its timeline up to that point. ``merge.py`` turns the
rank files into ``FILE`` (Chrome trace JSON), off the ranks' hot path: an op costs a tuple
appended to a list here, and its share of one ``msgpack.packb`` per chunk
(the trace_overhead benchmark measures both).

Entry kinds: ``rank`` (who wrote the file, once), ``dtypes`` (code -> name and item size,
once), ``ops`` (finished flight-recorder records plus their thread's name), ``spans``
(DDP buckets, optimizer steps: name, category, start, end, row, args), ``rows`` (names of
extra rows) and ``clock`` (this rank's offset to rank 0 and its error bound, seconds).

Timestamps are this host's monotonic clock (``time.perf_counter``: CLOCK_MONOTONIC, one
clock for every process of a host); ``merge.py`` adds the rank's offset to rank 0's clock
(0 on rank 0's host, estimated by ``clock.py`` on other hosts), so every rank's events line
up.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import msgpack

FLUSH_EVERY = 4096
TRACE_FILE_SUFFIX = ".rank{rank}.trace"
P2P_PREFIXES = ("send ", "recv ")               # point-to-point records: "send to 3", ...

# Rows (Chrome trace "tid") of each rank's process row.
MAIN_TID, COMM_TID, OTHER_THREADS_TID, DDP_TID = 0, 1, 10, 100   # DDP bucket i: DDP_TID + i

active: Tracer | None = None          # this process's tracer (the default world's), or None


def rank_file(path: str, rank: int) -> str:
    return path + TRACE_FILE_SUFFIX.format(rank=rank)


class Tracer:
    """This rank's timeline, buffered and appended to its rank file.

    Args:
        path: the merged trace file (``RINGRT_TRACE``); this rank writes ``path.rank{R}.trace``.
        rank, world_size: this rank in the world.
        dtypes: dtype code -> NumPy dtype (written once, so records keep only the code).
    """

    def __init__(self, path: str, rank: int, world_size: int, dtypes: dict):
        self.path, self.rank, self.world_size = path, rank, world_size
        self.file_path = rank_file(path, rank)
        self._ops: list[tuple] = []
        self._spans: list[tuple] = []
        self._rows: dict[int, str] = {}
        self._lock = threading.Lock()
        self._file = open(self.file_path, "wb")  # noqa: SIM115 - open until close()
        self._write("rank", {"rank": rank, "world_size": world_size,
                             "host": os.uname().nodename, "pid": os.getpid(),
                             "main_thread": threading.main_thread().name})
        self._write("dtypes", {code: [str(dtype), dtype.itemsize]
                               for code, dtype in dtypes.items() if dtype is not None})

    # -- recording (hot path: tuples, packed at flush) ------------------------------------

    def op(self, record: list) -> None:
        """Record a finished op (its flight-recorder record, final state included)."""
        self._ops.append((*record, threading.current_thread().name))
        if len(self._ops) >= FLUSH_EVERY:
            self.flush()

    def span(self, name: str, category: str, start: float, end: float, tid: int | None = None,
             args: dict | None = None) -> None:
        """Record a span between two ``perf_counter`` readings (``tid`` None: this thread's
        row)."""
        row = threading.current_thread().name if tid is None else tid
        self._spans.append((name, category, start, end, row, args or {}))

    def row(self, tid: int, name: str) -> int:
        """Name the row ``tid`` of this rank (once); returns ``tid``."""
        if tid not in self._rows:
            self._rows[tid] = name
            with self._lock:
                self._write("rows", {tid: name})
        return tid

    # -- writing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Append what was recorded since the last flush to the rank file."""
        with self._lock:
            ops, self._ops = self._ops, []
            spans, self._spans = self._spans, []
            if self._file is None:
                return
            if ops:
                self._write("ops", ops)
            if spans:
                self._write("spans", spans)
            self._file.flush()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def set_clock(self, offset: float, error: float) -> None:
        """This rank's clock offset to rank 0 (seconds to add) and its error bound."""
        with self._lock:
            self._write("clock", [offset, error])

    def _write(self, kind: str, payload) -> None:
        if self._file is not None:
            self._file.write(msgpack.packb([kind, payload]))


@contextlib.contextmanager
def _timed(name: str, category: str):
    tracer = active
    start = time.perf_counter()
    try:
        yield
    finally:
        if tracer is not None:
            tracer.span(name, category, start, time.perf_counter())


_off = contextlib.nullcontext()


def span(name: str, category: str):
    """``with span("Adam.step", "optimizer"): ...`` records a span while tracing; otherwise
    it is a shared no-op context (one attribute check)."""
    return _off if active is None else _timed(name, category)
