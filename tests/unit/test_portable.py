"""The portable shared-memory path, forced on Linux: ``shm_open`` names instead of files in
/dev/shm (RINGRT_SHM_OPEN=1), a polling wait instead of futexes (RINGRT_NO_FUTEX=1), and
the AF_UNIX path limit of macOS (docs/platforms.md)."""

import ctypes
import os
import shutil
import stat
import threading
import time

import numpy as np
import pytest
import zmq

from ringrt._comm import futex, shm, shm_files, transport
from ringrt._comm.shm import ShmArena
from ringrt._comm.tickets import encode_ticket
from ringrt.errors import DistError

LINUX_SHM = os.path.isdir("/dev/shm")


@pytest.fixture
def shm_open(monkeypatch):
    monkeypatch.setenv("RINGRT_SHM_OPEN", "1")
    assert shm_files.uses_shm_open()


@pytest.fixture
def no_futex(monkeypatch):
    monkeypatch.setattr(futex, "AVAILABLE", False)


def pair():
    arenas = [ShmArena(r, 2) for r in range(2)]
    for arena in arenas:
        arena.attach({a.rank: a.card for a in arenas})
    return arenas


def later(seconds, action):
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


def test_shm_open_segments_have_short_private_names_and_leave_nothing(shm_open):
    arenas = pair()
    try:
        for arena in arenas:
            assert shm_files.is_name(arena.path) and len(arena.path) <= shm_files.NAME_LIMIT
            assert arena.path.startswith(f"/ringrt-{os.getpid()}-")
            if LINUX_SHM:             # Linux keeps shm_open names in /dev/shm: look at them
                info = os.stat("/dev/shm" + arena.path)
                assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()
        arenas[0].own.slot[:5] = np.arange(5, dtype=np.uint8)
        assert list(arenas[1].segments[0].slot[:5]) == [0, 1, 2, 3, 4]   # one memory
    finally:
        for arena in arenas:
            arena.close()
    if LINUX_SHM:
        assert not any(os.path.exists("/dev/shm" + a.path) for a in arenas)


def test_a_name_is_created_only_once(shm_open):
    path = shm_files.new_path("-0")
    fd = shm_files.open_fd(path, create=True)
    try:
        with pytest.raises(FileExistsError):
            shm_files.open_fd(path, create=True)
    finally:
        os.close(fd)
        shm_files.unlink(path)
    shm_files.unlink(path)                         # gone already: fine


def test_names_that_would_not_fit_macos_are_refused():
    with pytest.raises(ValueError, match="longer than 31"):
        shm_files.new_path("-" + "x" * 20)


def test_the_polling_wait_sees_a_change_and_times_out_without_one():
    word = ctypes.c_uint32(7)
    address = ctypes.addressof(word)
    assert futex._poll(address, 7, 0.005) == futex.TIMED_OUT
    thread = later(0.01, lambda: setattr(word, "value", 8))
    assert futex._poll(address, 7, 5.0) == futex.CHANGED
    thread.join()
    assert futex._poll(address, 7, 0.0) == futex.CHANGED    # differs already


@pytest.mark.parametrize("use_shm_open", [False, True])
def test_arena_waits_work_without_futexes(no_futex, monkeypatch, use_shm_open):
    if use_shm_open:
        monkeypatch.setenv("RINGRT_SHM_OPEN", "1")
    waiter, peer = pair()
    try:
        target = encode_ticket(1, 1)
        thread = later(0.02, lambda: peer.signal(target))
        waiter.wait([1], target, check=lambda pending: None)
        thread.join()
        assert waiter.segments[1].ticket.value == target
        assert waiter.tally.snapshot()["sleeps"] >= 1          # it did wait, by polling
    finally:
        waiter.close()
        peer.close()


def test_a_too_long_ipc_dir_is_refused_saying_the_limit(monkeypatch, tmp_path):
    monkeypatch.setenv("RINGRT_IPC_DIR", "/tmp/" + "d" * 72)        # 77 bytes
    with pytest.raises(DistError, match="AF_UNIX limit of 103 bytes.*at most 74"):
        transport.make_ipc_dir(path_max=103)                          # macOS


def test_the_longest_allowed_ipc_dir_still_binds(monkeypatch):
    budget = transport.IPC_PATH_MAX - transport._IPC_PATH_OVERHEAD
    parent = "/tmp/rrl-" + "d" * (budget - len("/tmp/rrl-"))
    assert len(parent) == budget
    monkeypatch.setenv("RINGRT_IPC_DIR", parent)
    path = transport.make_ipc_dir()
    sock = zmq.Context.instance().socket(zmq.PULL)
    try:
        sock.bind(f"ipc://{path}/123456.d")        # the longest socket path a rank makes
    finally:
        sock.close(linger=0)
        shutil.rmtree(parent)
