"""This rank's op counters (``ringrt.stats()["ops"]``): calls, bytes, time, algorithms.

Recorded once per op by the process group (and by point-to-point calls), so the cost is a
dict update, not a log line. Transport, security and shared-memory counters live with the
parts that count them (mailbox, sentinel, guard, arena) and are gathered by
``_process_group._Comm.stats``.
"""

from __future__ import annotations


class OpCounters:
    """name -> [calls, bytes, seconds, failed]; (op, algorithm) -> times chosen.

    A few dict and list updates, because it runs on every op (timeit of each part: figures
    in docs/performance-notes.md).
    """

    def __init__(self):
        self._ops: dict[str, list] = {}
        self._choices: dict[str, int] = {}

    def record(self, name: str, nbytes: int, seconds: float, failed: bool = False) -> None:
        entry = self._ops.get(name)
        if entry is None:
            entry = self._ops[name] = [0, 0, 0.0, 0]
        entry[0] += 1
        entry[1] += nbytes
        entry[2] += seconds
        entry[3] += failed

    def chose(self, op: str, algorithm: str) -> None:
        key = (op, algorithm)                    # formatted in snapshot(), not per op
        self._choices[key] = self._choices.get(key, 0) + 1

    def snapshot(self) -> dict:
        """A JSON-ready copy: ``{"ops": {name: {calls, bytes, seconds, failed}},
        "algorithms": {"op/algorithm": times}}``."""
        ops = {name: {"calls": calls, "bytes": nbytes, "seconds": seconds, "failed": failed}
               for name, (calls, nbytes, seconds, failed) in sorted(self._ops.items())}
        choices = {f"{op}/{algorithm}": times
                   for (op, algorithm), times in sorted(self._choices.items())}
        return {"ops": ops, "algorithms": choices}
