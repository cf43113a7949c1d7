"""The flight recorder: the last N ops of this rank, kept in memory, always on.

Each op is one short list (a list literal is the cheapest mutable record in CPython: a
``__slots__`` class costs an ``__init__`` call per op), indexed by the constants below. The
ring holds the last ``RINGRT_FLIGHT_RECORDER`` ops (default 64; 0 turns it off). A record is
written when the op is called (``QUEUED``), when it starts running and when it ends, so a dump
shows, per rank, the last op entered and the last op finished.
"""

from __future__ import annotations

import os
import time

from ringrt._observe.site import short
from ringrt._settings import read_setting

# Fields of a record.
GROUP, SEQ, NAME, DTYPE, COUNT, ALGORITHM, SITE, CALLED, STARTED, ENDED, STATE, WAITED = range(12)

# States.
QUEUED, RUNNING, DONE = "queued", "running", "done"
FAILED = "failed"                     # stored as "failed: ErrorName"


MAX_SIZE = 1 << 20                    # records (8 MB of ring before any op is recorded)


class FlightRecorder:
    """A ring of the last ``size`` op records of this rank."""

    def __init__(self, size: int | None = None):
        self.size = read_setting("RINGRT_FLIGHT_RECORDER") if size is None else size
        if not 0 <= self.size <= MAX_SIZE:     # the ring is allocated up front: bound it first
            raise ValueError(f"RINGRT_FLIGHT_RECORDER must be in [0, {MAX_SIZE}], got {self.size}")
        self._ring: list = [None] * self.size
        self.entered = 0                      # records ever written

    def enter(self, group: int, seq: int, name: str, dtype_code: int, count: int,
              algorithm: str, site: tuple) -> list:
        """Record an op as called; returns its record (updated in place as it runs)."""
        record = [group, seq, name, dtype_code, count, algorithm, site, time.perf_counter(),
                  0.0, 0.0, QUEUED, 0.0]
        if self.size:
            self._ring[self.entered % self.size] = record
            self.entered += 1
        return record

    def records(self) -> list[list]:
        """The kept records, oldest first."""
        if not self.size or not self.entered:
            return []
        start = self.entered % self.size if self.entered > self.size else 0
        ring = self._ring
        return [r for r in ring[start:] + ring[:start] if r is not None]


def describe(record: list, now: float, dtype_name) -> dict:
    """A JSON-ready view of one record (times relative to ``now``, seconds)."""
    started, ended = record[STARTED], record[ENDED]
    itemsize = getattr(dtype_name(record[DTYPE]), "itemsize", 0)
    site = record[SITE]
    return {
        "group": record[GROUP], "seq": record[SEQ], "op": record[NAME],
        "dtype": str(dtype_name(record[DTYPE]) or "-"),
        "bytes": max(record[COUNT], 0) * itemsize,
        "algorithm": record[ALGORITHM] or "-",
        "state": record[STATE],
        "called_s_ago": round(now - record[CALLED], 6),
        "ran_s": round((ended or now) - started, 6) if started else None,
        "waited_s": round(record[WAITED], 6),
        "site": short(site), "file": site[0], "line": site[1], "function": site[2],
    }


def process_identity() -> dict:
    return {"pid": os.getpid(), "host": os.uname().nodename}
