"""Flight-recorder dumps of the workers, and the table that names the rank that diverged.

Workers write their dumps to ``RINGRT_FLIGHT_DIR`` (``ringrt/_observe/dump.py``): on the
first ``TimeoutError`` / ``PeerLostError`` / ``CollectiveMismatchError``, and on SIGUSR1.
When a worker fails, or ringrun is told to stop, ringrun sends SIGUSR1 to the workers still
running, waits up to :data:`DUMP_WAIT_SECONDS` for their dumps, and its summary prints, per
rank, the last op entered and the last op finished, then a diagnosis such as::

    ranks 0-2 are in all_reduce #41 (group 0), called from train.py:80
    rank 3 is not in any op: it last finished all_reduce #40 and is now at train.py:88 in main

PyTorch's flight recorder needs a separate tool run over dumps that every rank wrote on its
own timeout; a rank that is not inside a collective leaves nothing to compare. Here the rank
that skipped a collective is asked where it is (its main thread's source line at SIGUSR1),
and the summary is printed by the launcher as the job ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time

from ringrt._comm import stale
from ringrt._observe.dump import DUMP_KINDS, SIGNAL_DUMP, dump_path, listening_path
from ringrt._observe.timeline import P2P_PREFIXES

DUMP_WAIT_SECONDS = 2.0


class FlightDumps:
    """The job's dump directory (temporary; with ``--log-dir``, the dumps of a failure are
    copied to ``DIR/flight/``)."""

    def __init__(self, directory: str, log_dir: str | None = None):
        self.directory, self.log_dir = directory, log_dir

    @classmethod
    @contextlib.contextmanager
    def for_job(cls, log_dir: str | None):
        directory, lock = stale.make_owned_dir("ringrun-flight-")   # swept if we are killed
        try:
            yield cls(directory, log_dir)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
            os.close(lock)

    def clear(self) -> None:
        """Remove the dumps of an earlier attempt (restarts reuse the directory)."""
        for name in os.listdir(self.directory):
            if name.endswith((".json", ".listening")):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.directory, name))

    def worker_env(self) -> dict[str, str]:
        return {"RINGRT_FLIGHT_DIR": self.directory}

    def request(self, workers) -> None:
        """SIGUSR1 to each running worker; wait (bounded) until each dumped or exited."""
        asked = time.time()
        waiting = []
        for worker in workers:
            if not self._listens(worker):
                continue                 # SIGUSR1 would kill it (no ringrt handler yet)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(worker.pid, signal.SIGUSR1)
                waiting.append(worker)
        deadline = time.monotonic() + DUMP_WAIT_SECONDS
        while waiting and time.monotonic() < deadline:
            waiting = [w for w in waiting
                       if not self._dumped_since(w.rank, asked) and not w.has_exited()]
            time.sleep(0.02)

    def _listens(self, worker) -> bool:
        path = listening_path(self.directory, worker.rank)
        try:
            with open(path) as file:
                return file.read().strip() == str(worker.pid)
        except OSError:
            return False

    def _dumped_since(self, rank: int, moment: float) -> bool:
        path = dump_path(rank, SIGNAL_DUMP, self.directory)
        with contextlib.suppress(OSError):
            return os.path.getmtime(path) >= moment - 0.01
        return False

    def collect(self) -> dict[int, dict]:
        """rank -> its newest dump (with the first error's reason, if it had one)."""
        dumps: dict[int, dict] = {}
        for name in sorted(os.listdir(self.directory)):
            parts = name.split(".")
            if len(parts) != 3 or parts[1] not in DUMP_KINDS or not parts[0].startswith("rank"):
                continue
            try:
                with open(os.path.join(self.directory, name)) as file:
                    dump = json.load(file)
                rank = int(parts[0][4:])
            except (OSError, ValueError):
                continue
            dumps.setdefault(rank, {})[parts[1]] = dump
        return {rank: _newest(kinds) for rank, kinds in dumps.items()}

    def summary(self, ranks) -> str | None:
        """The failure summary's table and diagnosis for ``ranks`` (None: no dumps at all)."""
        dumps = self.collect()
        if not dumps:
            return None
        lines = [*table(dumps, ranks), *diagnose(dumps, ranks)]
        kept = self._keep()
        if kept:
            lines.append(f"(flight-recorder dumps, with every thread's stack: {kept})")
        return "\n".join(lines)

    def _keep(self) -> str | None:
        """Copy the dumps to ``--log-dir``/flight (the temporary directory goes at exit)."""
        if not self.log_dir:
            return None
        kept = os.path.join(self.log_dir, "flight")
        os.makedirs(kept, exist_ok=True)
        for name in os.listdir(self.directory):
            if name.endswith(".json"):
                shutil.copy(os.path.join(self.directory, name), kept)
        return kept


def _newest(kinds: dict) -> dict:
    newest = max(kinds.values(), key=lambda d: d.get("wall_time", 0))
    error = kinds.get("error")
    return {**newest, "error": error["reason"] if error else None}


# -- reading dumps (pure functions, unit-tested) ---------------------------------------------


def position(dump: dict):
    """(group, seq, op) of the op the rank is in, or None when it is in none."""
    op = dump.get("last_entered")
    if op is None or op["state"] == "done" or op["op"].startswith(P2P_PREFIXES):
        return None
    return (op["group"], op["seq"], op["op"])


def _op_name(op: dict | None) -> str:
    if op is None:
        return "-"
    if op["op"].startswith(P2P_PREFIXES):
        return f"{op['op']} (tag {op['seq']})"
    group = "" if op["group"] == 0 else f" (group {op['group']})"
    return f"{op['op']} #{op['seq']}{group}"


def table(dumps: dict[int, dict], ranks) -> list[str]:
    lines = ["flight recorder: last op each rank entered and finished",
             (f"  {'rank':>4}  {'state':<26} {'last entered':<28} {'last finished':<24} "
              "called from / now at")]
    for rank in ranks:
        dump = dumps.get(rank)
        if dump is None:
            lines.append(f"  {rank:>4}  {'(no dump)':<26}")
            continue
        entered, finished = dump.get("last_entered"), dump.get("last_finished")
        in_op = position(dump) is not None
        state = entered["state"] if in_op else "not in an op"
        where = entered["site"] if in_op else (dump.get("where") or {}).get("site", "?")
        function = entered["function"] if in_op else (dump.get("where") or {}).get("function")
        lines.append(f"  {rank:>4}  {state:<26} {_op_name(entered):<28} "
                     f"{_op_name(finished):<24} {where}" + (f" in {function}" if function else ""))
    return lines


def diagnose(dumps: dict[int, dict], ranks) -> list[str]:
    """Plain sentences: which ranks are in which op, and who is elsewhere."""
    ranks = list(ranks)
    missing = [r for r in ranks if r not in dumps]
    by_position: dict = {}
    for rank in ranks:
        if rank in dumps:
            by_position.setdefault(position(dumps[rank]), []).append(rank)
    in_ops = {p: rs for p, rs in by_position.items() if p is not None}
    lines = []
    if in_ops:
        majority = max(in_ops, key=lambda p: (len(in_ops[p]), -p[1]))
        group, seq, name = majority
        site = dumps[in_ops[majority][0]]["last_entered"]["site"]
        lines.append(f"{_ranks(in_ops[majority])} in {name} #{seq}"
                     f"{'' if group == 0 else f' (group {group})'}, called from {site}")
        for other, others in sorted(in_ops.items(), key=lambda kv: kv[1]):
            if other != majority:
                lines.append(_elsewhere(others, other, majority, dumps))
    for rank in by_position.get(None, []):
        dump = dumps[rank]
        finished = dump.get("last_finished")
        where = dump.get("where") or {}
        last = f"it last finished {_op_name(finished)}" if finished else "it finished no op yet"
        lines.append(f"rank {rank} is not in any op: {last} and is now at "
                     f"{where.get('site', '?')} in {where.get('function', '?')}")
    if missing:
        lines.append(f"{_ranks(missing, verb=False)}: no flight record (exited before "
                     f"dumping, or did not answer SIGUSR1 within {DUMP_WAIT_SECONDS:g} s)")
    if len(in_ops) == 1 and not by_position.get(None) and not missing and len(ranks) > 1:
        lines.append("every rank is in the same op: look for a slow or stuck rank (its stack "
                     "above) or a lost message")
    return ["diagnosis:", *(f"  {line}" for line in lines)]


def _elsewhere(ranks: list[int], where, majority, dumps) -> str:
    group, seq, name = where
    site = dumps[ranks[0]]["last_entered"]["site"]
    if (group, seq) == majority[:2]:
        why = f"a different op at the same sequence number (the others: {majority[2]})"
    elif group == majority[0] and seq < majority[1]:
        why = f"behind the others (#{majority[1]})"
    elif group == majority[0]:
        why = f"ahead of the others (#{majority[1]})"
    else:
        why = "in another group"
    return (f"{_ranks(ranks)} in {name} #{seq}{'' if group == 0 else f' (group {group})'}, "
            f"called from {site}: {why}")


def _ranks(ranks: list[int], verb: bool = True) -> str:
    ranks = sorted(ranks)
    if len(ranks) == 1:
        return f"rank {ranks[0]}" + (" is" if verb else "")
    return f"ranks {rank_span(ranks)}" + (" are" if verb else "")


def rank_span(ranks: list[int]) -> str:
    """``0-3`` for consecutive ranks, ``5`` for one, ``0, 2, 5`` otherwise (sorted input)."""
    if ranks and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"{ranks[0]}-{ranks[-1]}" if len(ranks) > 1 else str(ranks[0])
    return ", ".join(map(str, ranks))
