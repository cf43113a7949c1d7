"""Worker trampoline: ``python _child.py PARENT_PID CPUS -- COMMAND [ARGS...]``.

The launcher starts every worker through this tiny program instead of a ``preexec_fn`` (which
runs Python between fork and exec in a process that may hold threads and locks). It:

1. asks Linux to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``; the setting survives
   ``exec``, so it covers the real worker), then checks that the parent is still the launcher
   (``PARENT_PID``): if the launcher died before ``prctl`` took effect, it exits at once;
2. pins itself to ``CPUS``, a Linux cpulist such as ``0-3,8`` (``--bind``, ``--cpu-bind``; the
   launcher's plan, binding.py), or does nothing when it is ``-``;
3. restores SIGPIPE / SIGXFSZ to their defaults (Python ignores them, and ignored signals
   would be inherited by a non-Python worker), then ``os.execvp``s the command, keeping its pid,
   session and pipes.

Only the standard library is used, so the launcher can run it by path with ``python -I -S``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 1
EXIT_BAD_USAGE = 2


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process (and, after exec, the worker) when the launcher dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(errno)}")
    if os.getppid() != parent_pid:      # the launcher died before prctl took effect
        os._exit(EXIT_ORPHANED)


def bind_cpus(cpulist: str) -> None:
    """Pin this process to the CPUs of ``cpulist`` (``"0-3,8"``; binding.parse_cpus, repeated
    here because the trampoline runs by path without site-packages)."""
    cpus: set[int] = set()
    for part in cpulist.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    os.sched_setaffinity(0, cpus)


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: python -m ringrt_launcher._child PARENT_PID CPUS|- -- "
                         "COMMAND...\n")
        sys.exit(EXIT_BAD_USAGE)
    die_with_parent(int(argv[0]))
    if argv[1] != "-":
        bind_cpus(argv[1])
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)
    command = argv[3:]
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"ringrun: cannot run {command[0]!r}: {exc}\n")
        os._exit(127)        # the shell's "command not found" status


if __name__ == "__main__":
    main(sys.argv[1:])
