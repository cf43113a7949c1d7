"""Leftovers of ranks that died before cleaning up: this user's ipc directories and
shared-memory segments, named ``PREFIX<pid>-...``, whose process no longer exists.

A rank unlinks its segment as soon as every peer mapped it and removes its socket directory
on exit, so only a rank killed in between leaves anything; the next job on the machine
removes it (issue 10: stale ones are cleaned up, never reused: names are random and created
with O_EXCL / mkdtemp).
"""

from __future__ import annotations

import contextlib
import os
import shutil


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
    field = name[len(prefix):].split("-", 1)[0]
    return int(field) if field.isdigit() else None


def remove_stale(parent: str, prefix: str) -> None:
    """Remove this user's ``PREFIX<pid>-*`` entries in ``parent`` whose pid is gone."""
    with contextlib.suppress(OSError), os.scandir(parent) as entries:
        for entry in entries:
            pid = owner_pid(entry.name, prefix)
            if pid is None or pid_alive(pid):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != os.geteuid():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
