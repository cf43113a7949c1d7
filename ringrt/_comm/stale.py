"""Leftovers of processes that died before cleaning up: this user's ipc directories and
shared-memory segments of ranks, and ringrun's job and flight-recorder directories, all named
``PREFIX<pid>-...``, whose owner is gone.

A rank unlinks its segment as soon as every peer mapped it and removes its socket directory
on exit, and ringrun removes its directories when it ends, so only a process killed in
between (SIGKILL: a CI timeout, the OOM killer) leaves anything; the next rank or ringrun to
start on the machine removes it (cleaned up, never reused, so nobody can plant one for us to
pick up and nothing piles up: names are random and created with O_EXCL / mkdtemp).

Whether the owner is gone: a ringrun directory holds a lock file its ringrun keeps locked
(``flock``) for as long as it runs; the kernel drops that lock when the process dies however
it dies, so a lock we can take means a dead owner, even if its pid was reused meanwhile or it
ran in another pid namespace. A name whose directory has no lock file yet (or a rank's ipc
directory or segment, which have none) counts as gone only when no process has its pid: a
reused pid keeps a leftover longer, never removes a live job's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile

LOCK_NAME = ".owner.lock"
JOB_PARENT = "/tmp"                                  # ringrun's directories live here
JOB_PREFIXES = ("ringrun-", "ringrun-flight-")       # ringrt_launcher/env.py, ringrt_launcher/flight.py


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (possibly another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid(name: str, prefix: str) -> int | None:
    """The pid in ``PREFIX<pid>-...``, or None for names that are not ours."""
    if not name.startswith(prefix):
        return None
    field, dash, _rest = name[len(prefix):].partition("-")
    # the dash is required: an older ringrun's "ringrun-XXXXXXXX" (mkdtemp's random letters
    # and digits only) must never be read as a pid
    return int(field) if dash and field.isascii() and field.isdigit() else None


def remove_stale(parent: str, prefix: str) -> int:
    """Remove this user's ``PREFIX<pid>-*`` entries in ``parent`` whose owner is gone (see the
    module docstring); returns how many were removed."""
    removed = 0
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            pid = owner_pid(entry.name, prefix)
            if pid is None:
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if _owner_gone(entry.path, pid):
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed += 1
                elif not pid_alive(pid):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _owner_gone(path: str, pid: int) -> bool:
    """True when the directory's lock can be taken (its owner died), or it has no lock file
    and no process has ``pid``."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return not pid_alive(pid)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:                   # held: its owner (or a child that inherited it) runs
        return False
    finally:
        os.close(fd)                  # also releases the lock we may have taken
    return True


def sweep_jobs() -> int:
    """Remove the directories dead ringruns of this user left in /tmp (and, with them, the
    socket directories of their ranks); called when a ringrun or a rank starts."""
    return sum(remove_stale(JOB_PARENT, prefix) for prefix in JOB_PREFIXES)


def make_owned_dir(prefix: str, parent: str = JOB_PARENT) -> tuple[str, int]:
    """A fresh private ``PREFIX<pid>-XXXXXXXX`` directory and the fd that holds its lock file
    locked; keep the fd open for as long as the directory is in use, then close it.

    Returns:
        (path, lock_fd).
    """
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return path, fd
