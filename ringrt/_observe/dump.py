"""The flight recorder's dump: on an error, on SIGUSR1, or when ``ringrun`` asks.

A dump writes, for every world of this process (the default group's, ``ringrt.torch``'s):

- to stderr: a table of the last ops (oldest first: group, seq, op, dtype, bytes, algorithm,
  state, times, the user's source line) and every thread's Python stack (``faulthandler``);
- to ``$RINGRT_FLIGHT_DIR/rank{R}.error.json`` (or ``.signal.json``) when that is set (``ringrun`` sets it): the whole
  ring, why it was dumped, where the main thread is, and the stacks, which ``ringrun`` reads
  to name the rank that diverged (``ringrt_launcher/flight.py``).

Errors dump once per process (the first ``TimeoutError``, ``PeerLostError`` or
``CollectiveMismatchError``: later ops of a broken group raise the same error again);
SIGUSR1 dumps every time. The SIGUSR1 handler is a Python handler, so it runs on the main
thread between two bytecodes: an op waiting for peers checks for signals between poll slices;
a main thread stuck in a C call that never returns (rare in a ringrt job) dumps only when
that call ends.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
import traceback

from ringrt._observe.site import site_of

STDERR_OPS = 16                      # ops printed to stderr (the file has the whole ring)
ERROR_DUMP, SIGNAL_DUMP = "error", "signal"   # kept apart: a later SIGUSR1 keeps the error's
DUMP_KINDS = (ERROR_DUMP, SIGNAL_DUMP)

_sources: list = []                  # observers of this process's live worlds
_errors_dumped = False
_installed = False


def register(observer) -> None:
    """Dump ``observer`` on SIGUSR1 (installing the handler on first use, main thread only).

    With ``RINGRT_FLIGHT_DIR`` set, a file ``rank{R}.listening`` holding this pid tells
    ringrun that SIGUSR1 asks this process for a dump (rather than killing it, SIGUSR1's
    default): ringrun signals only workers that left it.
    """
    global _installed
    if observer not in _sources:
        _sources.append(observer)
    if not _installed and threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGUSR1)
        if previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, _on_sigusr1)
            _installed = True
    if _installed and observer.flight_dir:
        path = listening_path(observer.flight_dir, observer.rank)
        try:
            with open(path, "w") as file:
                file.write(str(os.getpid()))
        except OSError:
            pass


def unregister(observer) -> None:
    if observer in _sources:
        _sources.remove(observer)


def on_error(error: BaseException, site) -> None:
    """Dump once per process, on the first error that breaks a group."""
    global _errors_dumped
    if _errors_dumped:
        return
    _errors_dumped = True
    reason = f"{type(error).__name__}: {error}"
    _dump_all(reason, site)


def _on_sigusr1(_signum, frame) -> None:
    _dump_all("SIGUSR1 (a stack and flight-recorder dump was requested)",
              site_of(frame) if frame is not None else None, SIGNAL_DUMP)


def _dump_all(reason: str, where, kind: str = ERROR_DUMP) -> None:
    for observer in _sources[:]:          # a copy: a world may close meanwhile
        try:
            write(observer, reason, where, kind)
        except Exception as exc:  # noqa: BLE001 - a dump must never mask the error it reports
            print(f"ringrt: flight-recorder dump failed: {exc!r}", file=sys.stderr)


def write(observer, reason: str, where, kind: str = ERROR_DUMP) -> dict:
    """Write one world's dump to stderr and to its file; returns the dump."""
    observer.flush_timeline()
    report = observer.report(reason, where)
    report["kind"] = kind
    report["stacks"] = _stacks()
    path = dump_path(report["rank"], kind, observer.flight_dir)
    if path is not None:
        _write_atomically(path, report)
    _print(report, path)
    return report


def dump_path(rank: int, kind: str, directory: str | None) -> str | None:
    """``DIR/rank{R}.error.json`` or ``DIR/rank{R}.signal.json`` (DIR: RINGRT_FLIGHT_DIR)."""
    return os.path.join(directory, f"rank{rank}.{kind}.json") if directory else None


def listening_path(directory: str, rank: int) -> str:
    """``DIR/rank{R}.listening``: this rank's pid, once SIGUSR1 asks it for a dump."""
    return os.path.join(directory, f"rank{rank}.listening")


def _write_atomically(path: str, report: dict) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        json.dump(report, file, indent=1)
    os.replace(temporary, path)


def _stacks() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, ident)} (most recent call last):\n"
                     + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


def _print(report: dict, path: str | None) -> None:
    rank, ops = report["rank"], report["ops"]
    shown = ops[-STDERR_OPS:]
    lines = [f"ringrt[{rank}]: flight recorder - {report['reason']}",
             (f"ringrt[{rank}]: last {len(shown)} of {report['ops_recorded']} ops, oldest "
              "first (times in seconds):"),
             ("  group   seq  op                     dtype      bytes  algorithm           "
              "state                  called   ran  waited  called from")]
    for op in shown:
        ran = "-" if op["ran_s"] is None else f"{op['ran_s']:.4f}"
        lines.append(f"  {op['group']:>5} {op['seq']:>5}  {op['op']:<22} {op['dtype']:<8} "
                     f"{op['bytes']:>9}  {op['algorithm']:<19} {op['state']:<22} "
                     f"-{op['called_s_ago']:.3f} {ran} {op['waited_s']:.4f}  "
                     f"{op['site']} in {op['function']}")
    where = report.get("where")
    if where:
        lines.append(f"ringrt[{rank}]: main thread is at {where['site']} in {where['function']}")
    if path:
        lines.append(f"ringrt[{rank}]: full record in {path}")
    lines.append(f"ringrt[{rank}]: Python stacks (faulthandler):")
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
    try:
        faulthandler.dump_traceback(sys.stderr, all_threads=True)
    except (ValueError, OSError, AttributeError):      # stderr without a file descriptor
        sys.stderr.write(report["stacks"])
    sys.stderr.flush()
