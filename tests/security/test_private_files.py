"""A rank's files are private to its user, and dead ranks' leftovers are removed.

Socket directories ``rr-PID-*`` are 0700 and ours; shared-memory segments ``ringrt-PID-*``
are 0600, and a peer's segment is mapped only if it is ours and private. Entries of pids
that no longer exist are removed by the next rank to start; anything else is left alone.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from ringrt._comm import shm, shm_files
from ringrt._comm.shm import CONTROL_BYTES, ShmArena, _Segment
from ringrt._comm.stale import remove_stale
from ringrt._comm.transport import make_ipc_dir

AS_ROOT = os.geteuid() == 0


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_ipc_directory_is_private_and_named_after_its_pid(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGRT_IPC_DIR", str(tmp_path))
    path = make_ipc_dir()
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
    assert os.path.basename(path).startswith(f"rr-{os.getpid()}-")


def test_shared_memory_segment_is_private(monkeypatch):
    arena = ShmArena(0, 2)
    try:
        info = os.stat(arena.path)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
        assert os.path.basename(arena.path).startswith(f"ringrt-{os.getpid()}-")
    finally:
        arena.close()


def test_a_segment_others_can_read_is_refused(tmp_path):
    path = tmp_path / "ringrt-1-open-0"
    path.write_bytes(bytes(CONTROL_BYTES + 4096))
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="not private"):
        _Segment(str(path), CONTROL_BYTES + 4096, create=False)


@pytest.mark.skipif(not AS_ROOT, reason="needs root to make a file owned by someone else")
def test_a_segment_of_another_user_is_refused(tmp_path):
    path = tmp_path / "ringrt-1-theirs-0"
    path.write_bytes(bytes(CONTROL_BYTES + 4096))
    path.chmod(0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(PermissionError, match="not private"):
        _Segment(str(path), CONTROL_BYTES + 4096, create=False)


def test_leftovers_of_dead_ranks_are_removed_and_nothing_else(tmp_path, monkeypatch):
    gone, alive = dead_pid(), os.getpid()
    (tmp_path / f"rr-{gone}-abc").mkdir()
    (tmp_path / f"rr-{gone}-abc" / "0.d").write_text("")
    (tmp_path / f"rr-{alive}-def").mkdir()
    (tmp_path / f"ringrt-{gone}-0123-1").write_bytes(b"x")
    (tmp_path / f"ringrt-{alive}-4567-0").write_bytes(b"x")
    (tmp_path / "rr-notapid-x").mkdir()
    (tmp_path / "unrelated").write_text("")
    remove_stale(str(tmp_path), "rr-")
    remove_stale(str(tmp_path), "ringrt-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"rr-{alive}-def", f"ringrt-{alive}-4567-0", "rr-notapid-x", "unrelated"])


@pytest.mark.skipif(not AS_ROOT, reason="needs root to make a file owned by someone else")
def test_another_users_leftovers_are_left_alone(tmp_path):
    gone = dead_pid()
    theirs = tmp_path / f"ringrt-{gone}-0123-1"
    theirs.write_bytes(b"x")
    os.chown(theirs, 65534, 65534)
    remove_stale(str(tmp_path), "ringrt-")
    assert theirs.exists()


def test_a_new_arena_sweeps_dead_ranks_segments(monkeypatch, tmp_path):
    monkeypatch.setattr(shm_files, "SHM_DIR", str(tmp_path))
    stale = tmp_path / f"ringrt-{dead_pid()}-89ab-0"
    stale.write_bytes(b"x")
    monkeypatch.setattr(ShmArena, "__init__",
                        lambda self, rank, world, p2p_bytes=0, settings=None: None)
    ShmArena.create(0, 2)
    assert not stale.exists()
