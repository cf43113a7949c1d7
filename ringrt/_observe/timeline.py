"""The timeline: every op, DDP bucket and optimizer step of this rank as a Chrome-trace span.

``RINGRT_TRACE=FILE`` (``ringrun --trace FILE`` sets it) turns it on. Each rank appends its
events, already in the Chrome trace event format (``ph: "X"`` complete events, microseconds),
to ``FILE.rank{R}.jsonl``, one JSON object a line, in chunks of :data:`FLUSH_EVERY` events and
whenever the flight recorder dumps (an error, SIGUSR1), so a job that is killed afterwards
still leaves its timeline up to that point. ``merge.py`` turns the rank files into ``FILE``.

Timestamps are this host's monotonic clock (``time.perf_counter``: CLOCK_MONOTONIC, shared by
every process of a host) plus the rank's offset to rank 0's clock (0 on rank 0's host;
estimated by ``clock.py`` on other hosts), so every rank's events line up.

While an op runs, the cost of tracing is one tuple appended to a list (and, every
:data:`FLUSH_EVERY` ops, formatting them); ``benchmarks/trace_overhead.py`` measures it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

FLUSH_EVERY = 2048
P2P_PREFIXES = ("send ", "recv ")               # point-to-point records: "send to 3", ...
TRACE_FILE_SUFFIX = ".rank{rank}.jsonl"

# Thread rows (Chrome trace "tid") of each rank's process row.
MAIN_TID, COMM_TID, DDP_TID = 0, 1, 100         # DDP bucket i: row DDP_TID + i
OTHER_THREADS_TID = 10
_ROW_NAMES = {MAIN_TID: "main thread", COMM_TID: "ringrt ops thread (async ops)"}

active: Tracer | None = None          # this process's tracer (the default world's), or None


def trace_path(env=None) -> str | None:
    """The merged trace file ``RINGRT_TRACE`` names, or None when tracing is off."""
    value = (os.environ if env is None else env).get("RINGRT_TRACE", "").strip()
    return os.path.abspath(value) if value else None


def rank_file(path: str, rank: int) -> str:
    return path + TRACE_FILE_SUFFIX.format(rank=rank)


class Tracer:
    """This rank's timeline events, buffered and appended to its rank file."""

    def __init__(self, path: str, rank: int, world_size: int, dtype_name):
        self.path, self.rank, self.world_size = path, rank, world_size
        self.file_path = rank_file(path, rank)
        self.offset = 0.0                  # seconds to add to perf_counter for rank 0's clock
        self.offset_error = 0.0            # half the best ping round trip (bound on the error)
        self._dtype_name = dtype_name
        self._ops: list[tuple] = []
        self._spans: list[dict] = []
        self._meta: list[dict] = []            # thread rows met since the last flush
        self._threads: dict[str, int] = {}      # thread name -> row
        self._named: set[int] = set()
        self._lock = threading.Lock()
        self._file = open(self.file_path, "w")  # noqa: SIM115 - open until close()
        self._write([self._process_metadata()])

    # -- recording (hot path: tuples, formatted at flush) ---------------------------------

    def op(self, record: list, state: str) -> None:
        """Record a finished op (its flight-recorder record)."""
        self._ops.append((*record, state, threading.current_thread().name))
        if len(self._ops) >= FLUSH_EVERY:
            self.flush()

    def span(self, name: str, category: str, start: float, end: float, tid: int | None = None,
             args: dict | None = None) -> None:
        """Record a span of this rank between two ``perf_counter`` readings."""
        if tid is None:
            tid = self._tid(threading.current_thread().name)
        self._spans.append({"name": name, "cat": category, "ph": "X", "pid": self.rank,
                            "tid": tid, "ts": self._us(start), "dur": _dur(start, end),
                            "args": args or {}})

    def row(self, tid: int, name: str) -> int:
        """Name the row ``tid`` of this rank (once); returns ``tid``."""
        if tid not in self._named:
            self._named.add(tid)
            self._meta.extend(_row_metadata(self.rank, tid, name))
        return tid

    # -- writing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Format what was recorded since the last flush and append it to the rank file."""
        with self._lock:
            ops, self._ops = self._ops, []
            spans, self._spans = self._spans, []
            if self._file is None:
                return
            events = [self._op_event(op) for op in ops] + spans
            meta, self._meta = self._meta, []
            self._write(meta + events)
            self._file.flush()

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def set_clock(self, offset: float, error: float) -> None:
        self.offset, self.offset_error = offset, error
        with self._lock:
            self._write([self._clock_metadata()])

    def _write(self, events: list[dict]) -> None:
        if events:
            self._file.write("".join(json.dumps(e, separators=(",", ":")) + "\n"
                                     for e in events))

    def _us(self, seconds: float) -> float:
        return round((seconds + self.offset) * 1e6, 3)

    def _tid(self, thread: str) -> int:
        tid = self._threads.get(thread)
        if tid is None:
            tid = self._threads[thread] = _classify_thread(thread, len(self._threads))
            self.row(tid, _ROW_NAMES.get(tid, f"thread {thread}"))
        return tid

    def _op_event(self, op: tuple) -> dict:
        (group, seq, name, dtype_code, count, algorithm, site, called, started, ended, _state,
         waited, state, thread) = op
        dtype = self._dtype_name(dtype_code)
        ran = max(ended - started, 0.0)
        args = {"group": group, "seq": seq, "dtype": str(dtype) if dtype is not None else "-",
                "bytes": max(count, 0) * getattr(dtype, "itemsize", 0),
                "algorithm": algorithm or "-",
                "wait_us": round(waited * 1e6, 1),
                "move_us": round(max(ran - waited, 0.0) * 1e6, 1),
                "queued_us": round(max(started - called, 0.0) * 1e6, 1),
                "state": state,
                "called_from": f"{site[0]}:{site[1]} in {site[2]}"}
        if name.startswith(P2P_PREFIXES):
            category, title = "p2p", f"{name} (tag {seq})"
        else:
            category = "collective"
            title = f"{name} #{seq}" if group == 0 else f"{name} g{group} #{seq}"
        return {"name": title, "cat": category, "ph": "X", "pid": self.rank,
                "tid": self._tid(thread), "ts": self._us(started), "dur": _dur(started, ended),
                "args": args}

    def _process_metadata(self) -> dict:
        return {"name": "process_name", "ph": "M", "pid": self.rank, "tid": 0,
                "args": {"name": f"rank {self.rank}"}, "ringrt": {
                    "rank": self.rank, "world_size": self.world_size,
                    "host": os.uname().nodename, "pid": os.getpid()}}

    def _clock_metadata(self) -> dict:
        return {"name": "process_labels", "ph": "M", "pid": self.rank, "tid": 0,
                "args": {"labels": f"clock offset to rank 0: {self.offset * 1e6:+.1f} us "
                                   f"(+/- {self.offset_error * 1e6:.1f} us)"},
                "ringrt": {"clock_offset_s": self.offset, "clock_error_s": self.offset_error}}


def _row_metadata(rank: int, tid: int, name: str) -> list[dict]:
    return [{"name": "thread_name", "ph": "M", "pid": rank, "tid": tid, "args": {"name": name}},
            {"name": "thread_sort_index", "ph": "M", "pid": rank, "tid": tid,
             "args": {"sort_index": tid}}]


def _dur(start: float, end: float) -> float:
    return round(max(end - start, 0.0) * 1e6, 3)


def _classify_thread(name: str, seen: int) -> int:
    if name == threading.main_thread().name:
        return MAIN_TID
    if name.startswith("ringrt-ops"):
        return COMM_TID
    return OTHER_THREADS_TID + seen


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
