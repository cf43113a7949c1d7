"""Where shared-memory segments live: files in ``/dev/shm``, or POSIX ``shm_open`` names.

Linux has ``/dev/shm`` (a tmpfs): a segment is a file there, opened with ``O_NOFOLLOW``, and
the directory can be listed, so segments of ranks that died before unlinking theirs are swept.
Elsewhere (macOS, the BSDs) there is no such directory; POSIX shared memory is reached by
name through ``shm_open``, as ``multiprocessing.shared_memory`` does. Names there are short
(macOS: 31 bytes), so every segment is named ``ringrt-<pid>-<8 hex><tag>`` (at most 29 bytes
with its slash for a 7-digit pid and a tag of up to 5 bytes), and they cannot be listed:
a rank killed between creating its segment and every peer mapping it (a few milliseconds at
start-up) leaves it until reboot there.

``RINGRT_SHM_OPEN=1`` takes the ``shm_open`` path on Linux too (the names then land in
``/dev/shm`` anyway), which is how the tests exercise it.

A *path* here is what a rank puts on its card for peers to open: a file path
(``/dev/shm/ringrt-...``) or a ``shm_open`` name (``/ringrt-...``).
"""

from __future__ import annotations

import os
import secrets

from ringrt._comm.stale import remove_stale
from ringrt._settings import read_setting

try:
    import _posixshmem                     # CPython's shm_open / shm_unlink (3.8+, POSIX)
except ImportError:                        # pragma: no cover - Windows
    _posixshmem = None

SHM_DIR, SHM_PREFIX = "/dev/shm", "ringrt-"
NAME_LIMIT = 31                            # macOS PSHMNAMLEN, the leading slash included


def uses_shm_open() -> bool:
    """Whether segments are ``shm_open`` names (no ``/dev/shm``, or ``RINGRT_SHM_OPEN=1``)."""
    if _posixshmem is None:
        return False
    return read_setting("RINGRT_SHM_OPEN") or not os.path.isdir(SHM_DIR)


def available() -> bool:
    """Whether this machine has shared memory ringrt can use at all."""
    return os.path.isdir(SHM_DIR) or _posixshmem is not None


def new_path(tag: str) -> str:
    """A fresh segment path for this process; ``tag`` (e.g. ``-3``, ``-p2p``) ends the name."""
    name = f"{SHM_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{tag}"
    if len(name) + 1 > NAME_LIMIT:
        raise ValueError(f"shared-memory name /{name} is longer than {NAME_LIMIT} bytes")
    return path_of(name)


def path_of(name: str) -> str:
    """The path of the segment called ``name`` (a bare ``ringrt-...`` name)."""
    return f"/{name}" if uses_shm_open() else os.path.join(SHM_DIR, name)


def is_name(path: str) -> bool:
    """Whether ``path`` is a ``shm_open`` name (``/name``, one slash) rather than a file."""
    return path.startswith("/") and "/" not in path[1:]


def open_fd(path: str, create: bool) -> int:
    """Open (or, with ``create``, exclusively create, mode 0600) the segment at ``path``.

    Raises:
        OSError: it cannot be created or opened (exists, gone, no shared memory here).
    """
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    if not is_name(path):
        return os.open(path, flags | os.O_NOFOLLOW, 0o600)
    if _posixshmem is None:
        raise OSError(f"no POSIX shared memory on this platform to open {path}")
    return _posixshmem.shm_open(path, flags, 0o600)


def reserve(fd: int, size: int) -> None:
    """Give a new segment its size, reserving the memory where the platform can.

    ``posix_fallocate`` makes a full tmpfs fail here with OSError instead of with SIGBUS on
    first touch; macOS has none (and sizes a ``shm_open`` object once, with ``ftruncate``).
    """
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:                                  # pragma: no cover - macOS
        os.ftruncate(fd, size)


def unlink(path: str) -> None:
    """Remove the segment's name (mappings stay valid); a name already gone is fine."""
    try:
        if not is_name(path):
            os.unlink(path)
        elif _posixshmem is not None:
            _posixshmem.shm_unlink(path)
    except FileNotFoundError:
        pass


def sweep_stale() -> None:
    """Remove this user's segments whose creating process is gone (where they can be listed:
    ``/dev/shm``, which also holds Linux's ``shm_open`` names)."""
    if os.path.isdir(SHM_DIR):
        remove_stale(SHM_DIR, SHM_PREFIX)
