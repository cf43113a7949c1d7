"""Per-rank timeline files -> one Chrome trace / Perfetto JSON, and a check of that format.

``ringrun --trace FILE`` merges ``FILE.rank*.jsonl`` into ``FILE`` when the job ends (also
after a failure). Without the launcher, rank 0 merges at ``destroy_process_group`` once every
rank has closed its file (counted through the store, waiting at most
:data:`MERGE_WAIT_SECONDS`); ``python -m launcher.trace FILE [PARTS...]`` merges by hand (rank
files copied from several hosts, or merged files of several hosts' launchers).

The output is the JSON object form of the Chrome trace event format: ``{"traceEvents": [...]}``
with complete events (``ph: "X"``, ``ts``/``dur`` in microseconds) and metadata events
(``ph: "M"``: ``process_name`` "rank R", ``thread_name``, sort indices). Times start at 0 at
the job's first event; every rank's clock is already aligned to rank 0's in its file.
"""

from __future__ import annotations

import glob
import json
import os
import time

from ringrt._observe.timeline import TRACE_FILE_SUFFIX

MERGE_WAIT_SECONDS = 10.0
PHASES_WITH_DURATION = {"X"}


def rank_files(path: str) -> list[str]:
    """The rank files of trace ``path`` (``path.rank*.jsonl``), in rank order."""
    pattern = glob.escape(path) + TRACE_FILE_SUFFIX.format(rank="*")
    return sorted(glob.glob(pattern), key=_rank_of_file)


def _rank_of_file(path: str) -> int:
    try:
        return int(path.rsplit(".rank", 1)[1].split(".")[0])
    except (IndexError, ValueError):
        return 1 << 30


def read_events(path: str) -> list[dict]:
    """Events of a rank file (JSON lines; a torn last line is skipped) or a merged trace."""
    with open(path) as file:
        text = file.read()
    if text.lstrip().startswith("{\"traceEvents\""):
        return json.loads(text)["traceEvents"]
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue                     # the line a killed rank was writing
    return events


def merge(parts: list[str], output: str) -> dict:
    """Merge rank files / merged traces ``parts`` into ``output``; returns a summary
    ``{"ranks": [...], "events": n, "output": path}``."""
    events = [event for part in parts for event in read_events(part)]
    timed = [e for e in events if e.get("ph") in PHASES_WITH_DURATION]
    origin = min((e["ts"] for e in timed), default=0.0)
    for event in timed:
        event["ts"] = round(event["ts"] - origin, 3)
    ranks = sorted({e["pid"] for e in events if e.get("name") == "process_name"})
    events += [{"name": "process_sort_index", "ph": "M", "pid": r, "tid": 0,
                "args": {"sort_index": r}} for r in ranks]
    clocks = {e["pid"]: e["ringrt"] for e in events
              if e.get("name") == "process_labels" and "ringrt" in e}
    trace = {"traceEvents": events, "displayTimeUnit": "ms",
             "otherData": {"producer": "ringrt", "ranks": ranks, "origin_us": origin,
                           "clock": "CLOCK_MONOTONIC of each host, aligned to rank 0 "
                                    "(offsets estimated by ping rounds across hosts)",
                           "clock_offsets": {str(r): c for r, c in clocks.items()}}}
    temporary = f"{output}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        json.dump(trace, file, separators=(",", ":"))
    os.replace(temporary, output)
    return {"ranks": ranks, "events": len(timed), "output": output}


def merge_rank_files(path: str, remove: bool = True) -> dict | None:
    """Merge ``path.rank*.jsonl`` into ``path`` (and delete them); None if there are none."""
    parts = rank_files(path)
    if not parts:
        return None
    summary = merge(parts, path)
    if remove:
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
