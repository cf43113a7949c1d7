"""Rank timeline files -> one Chrome trace / Perfetto JSON, and a check of that format.

``ringrun --trace FILE`` merges ``FILE.rank*.trace`` into ``FILE`` when the job ends (also
after a failure). Without the launcher, rank 0 merges at ``destroy_process_group`` once every
rank has closed its file (counted through the store, waiting at most
:data:`MERGE_WAIT_SECONDS`); ``python -m ringrt_launcher.trace FILE [PARTS...]`` merges by
hand (rank files copied from several hosts, or merged files of several hosts' launchers).

The output is the JSON object form of the Chrome trace event format: ``{"traceEvents": [...]}``
with complete events (``ph: "X"``, ``ts``/``dur`` in microseconds) and metadata events
(``ph: "M"``: ``process_name`` "rank R", ``thread_name``, sort indices). Each rank's times
are moved onto rank 0's clock by the offset in its file, and start at 0 at the job's first
event.
"""

from __future__ import annotations

import glob
import json
import os
import time

import msgpack

from ringrt._observe.timeline import (
    COMM_TID,
    MAIN_TID,
    OTHER_THREADS_TID,
    P2P_PREFIXES,
    TRACE_FILE_SUFFIX,
)

MERGE_WAIT_SECONDS = 10.0
ROW_NAMES = {MAIN_TID: "main thread", COMM_TID: "ringrt ops thread (async ops)"}


def rank_files(path: str) -> list[str]:
    """The rank files of trace ``path`` (``path.rank*.trace``), in rank order."""
    pattern = glob.escape(path) + TRACE_FILE_SUFFIX.format(rank="*")
    return sorted(glob.glob(pattern), key=_rank_of_file)


def _rank_of_file(path: str) -> int:
    try:
        return int(path.rsplit(".rank", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return 1 << 30


# -- one rank file -> Chrome events ----------------------------------------------------------


class _RankFile:
    """What one rank file says, as Chrome events on rank 0's clock (microseconds)."""

    def __init__(self, path: str):
        self.info, self.dtypes, self.offset, self.error = {}, {}, 0.0, 0.0
        self.ops, self.spans, self.rows = [], [], {}
        with open(path, "rb") as file:
            unpacker = msgpack.Unpacker(file, strict_map_key=False, use_list=True)
            try:
                for kind, payload in unpacker:
                    self._take(kind, payload)
            except (msgpack.OutOfData, ValueError, TypeError):
                pass                      # the chunk a killed rank was writing
        self.rank = self.info.get("rank", _rank_of_file(path))
        self._threads: dict[str, int] = {}

    def _take(self, kind: str, payload) -> None:
        if kind == "rank":
            self.info = payload
        elif kind == "dtypes":
            self.dtypes = payload
        elif kind == "ops":
            self.ops.extend(payload)
        elif kind == "spans":
            self.spans.extend(payload)
        elif kind == "rows":
            self.rows.update(payload)
        elif kind == "clock":
            self.offset, self.error = payload

    def events(self) -> list[dict]:
        timed = [self._op_event(op) for op in self.ops]
        timed += [self._span_event(*span) for span in self.spans]
        return self._metadata() + timed

    def _us(self, seconds: float) -> float:
        return round((seconds + self.offset) * 1e6, 3)

    def _tid(self, row) -> int:
        if isinstance(row, int):
            return row
        tid = self._threads.get(row)
        if tid is None:
            if row == self.info.get("main_thread", "MainThread"):
                tid = MAIN_TID
            elif row.startswith("ringrt-ops"):
                tid = COMM_TID
            else:
                tid = OTHER_THREADS_TID + len(self._threads)
            self._threads[row] = tid
            self.rows.setdefault(tid, ROW_NAMES.get(tid, f"thread {row}"))
        return tid

    def _op_event(self, op: list) -> dict:
        (group, seq, name, dtype_code, count, algorithm, site, called, started, ended, state,
         waited, thread) = op
        dtype, itemsize = self.dtypes.get(dtype_code, ("-", 0))
        ran = max(ended - started, 0.0)
        args = {"group": group, "seq": seq, "dtype": dtype, "bytes": max(count, 0) * itemsize,
                "algorithm": algorithm or "-", "wait_us": round(waited * 1e6, 1),
                "move_us": round(max(ran - waited, 0.0) * 1e6, 1),
                "queued_us": round(max(started - called, 0.0) * 1e6, 1), "state": state,
                "called_from": f"{site[0]}:{site[1]} in {site[2]}"}
        if name.startswith(P2P_PREFIXES):
            category, title = "p2p", f"{name} (tag {seq})"
        else:
            category = "collective"
            title = f"{name} #{seq}" if group == 0 else f"{name} g{group} #{seq}"
        return {"name": title, "cat": category, "ph": "X", "pid": self.rank,
                "tid": self._tid(thread), "ts": self._us(started),
                "dur": round(ran * 1e6, 3), "args": args}

    def _span_event(self, name, category, start, end, row, args) -> dict:
        return {"name": name, "cat": category, "ph": "X", "pid": self.rank,
                "tid": self._tid(row), "ts": self._us(start),
                "dur": round(max(end - start, 0.0) * 1e6, 3), "args": args}

    def _metadata(self) -> list[dict]:
        rank = self.rank
        label = (f"{self.info.get('host', '?')} pid {self.info.get('pid', '?')}; clock offset "
                 f"to rank 0 {self.offset * 1e6:+.1f} us (+/- {self.error * 1e6:.1f} us)")
        return [{"name": "process_name", "ph": "M", "pid": rank, "tid": 0,
                 "args": {"name": f"rank {rank}"}},
                {"name": "process_sort_index", "ph": "M", "pid": rank, "tid": 0,
                 "args": {"sort_index": rank}},
                {"name": "process_labels", "ph": "M", "pid": rank, "tid": 0,
                 "args": {"labels": label}}]

    def row_metadata(self) -> list[dict]:
        events = []
        for tid, name in sorted(self.rows.items()):
            events += [{"name": "thread_name", "ph": "M", "pid": self.rank, "tid": int(tid),
                        "args": {"name": name}},
                       {"name": "thread_sort_index", "ph": "M", "pid": self.rank,
                        "tid": int(tid), "args": {"sort_index": int(tid)}}]
        return events


def read_events(path: str) -> tuple[list[dict], dict]:
    """Chrome events of a rank file or of a merged trace, and its clock entry (if a rank
    file)."""
    with open(path, "rb") as file:
        head = file.read(16)
    if head.lstrip().startswith(b"{"):
        with open(path) as file:
            trace = json.load(file)
        return trace["traceEvents"], trace.get("otherData", {}).get("clock_offsets", {})
    part = _RankFile(path)
    events = part.events()
    return part.row_metadata() + events, {
        str(part.rank): {"clock_offset_s": part.offset, "clock_error_s": part.error}}


# -- merging -----------------------------------------------------------------------------------


def merge(parts: list[str], output: str) -> dict:
    """Merge rank files / merged traces ``parts`` into ``output``; returns a summary
    ``{"ranks": [...], "events": n, "output": path}``."""
    events, clocks = [], {}
    for part in parts:
        more, clock = read_events(part)
        events += more
        clocks.update(clock)
    timed = [e for e in events if e.get("ph") == "X"]
    origin = min((e["ts"] for e in timed), default=0.0)
    for event in timed:
        event["ts"] = round(event["ts"] - origin, 3)
    ranks = sorted({e["pid"] for e in events if e.get("name") == "process_name"})
    trace = {"traceEvents": events, "displayTimeUnit": "ms",
             "otherData": {"producer": "ringrt", "ranks": ranks, "origin_us": origin,
                           "clock": "each host's CLOCK_MONOTONIC, moved onto rank 0's by "
                                    "offsets measured in ping rounds at init (0 on rank 0's "
                                    "host)",
                           "clock_offsets": clocks}}
    temporary = f"{output}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        json.dump(trace, file, separators=(",", ":"))
    os.replace(temporary, output)
    return {"ranks": ranks, "events": len(timed), "output": output}


def merge_rank_files(path: str) -> dict | None:
    """Merge ``path.rank*.trace`` into ``path`` and delete them; None if there are none."""
    parts = rank_files(path)
    if not parts:
        return None
    summary = merge(parts, path)
    for part in parts:
        os.remove(part)
    return summary


def merge_when_all_closed(store, key: str, rank: int, world_size: int, path: str) -> None:
    """Without the launcher: every rank counts itself out; rank 0 waits (bounded) for all,
    then merges the rank files it can see (all of them on one host or a shared disk)."""
    count = store.add(key, 1)
    if rank != 0:
        return
    deadline = time.monotonic() + MERGE_WAIT_SECONDS
    while count < world_size and time.monotonic() < deadline:
        time.sleep(0.01)
        count = store.add(key, 0)
    merge_rank_files(path)


# -- checking the format ---------------------------------------------------------------------


def validate(trace: dict) -> list[str]:
    """Problems of ``trace`` against the Chrome trace event format (empty: none found)."""
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list):
        return ["top level must be an object with a traceEvents list"]
    problems = []
    for index, event in enumerate(events):
        problems += [f"event {index}: {p}" for p in _event_problems(event)]
    return problems


def _event_problems(event) -> list[str]:
    if not isinstance(event, dict):
        return ["not an object"]
    problems = [f"missing {key!r}" for key in ("name", "ph", "pid", "tid") if key not in event]
    for key in ("pid", "tid"):
        if key in event and not (isinstance(event[key], int) and not isinstance(event[key], bool)):
            problems.append(f"{key} must be an integer")
    phase = event.get("ph")
    if phase == "X":
        for key in ("ts", "dur"):
            value = event.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                problems.append(f"{key} must be a number >= 0, got {value!r}")
    elif phase == "M":
        if not isinstance(event.get("args"), dict):
            problems.append("metadata needs an args object")
    elif phase is not None:
        problems.append(f"unexpected phase {phase!r}")
    if "args" in event and not isinstance(event["args"], dict):
        problems.append("args must be an object")
    return problems
