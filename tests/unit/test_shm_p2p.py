"""Same-host point-to-point (``_comm/channel.py``, ``_comm/shm_p2p.py``) in one process.

Every rank's arena and engine live in this process (the shared-memory files in a private
temporary directory instead of /dev/shm), so matching, ordering, growth, mismatches and the
lifetimes of grown rings are checked without spawning anything; ``tests/dist`` runs the same
paths across processes.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from ringrt._comm import channel, shm, shm_files, wakeups
from ringrt._comm.counters import OpCounters
from ringrt._comm.shm import ShmArena
from ringrt._comm.shm_p2p import ShmPointToPoint
from ringrt.errors import (
    CollectiveMismatchError,
    DistError,
    NotInitializedError,
    PeerLostError,
    TimeoutError,
)


class Host:
    """``world`` ranks' arenas and engines; ``lost[r]`` is rank r's sentinel verdicts."""

    def __init__(self, world: int):
        self.arenas = [ShmArena(r, world, p2p_bytes=channel.area_bytes(world))
                       for r in range(world)]
        for arena in self.arenas:
            arena.attach({a.rank: a.card for a in self.arenas})
        for arena in self.arenas:
            arena.unlink()
        self.lost = [{} for _ in range(world)]
        self.engines = [ShmPointToPoint(a, self.lost[a.rank], OpCounters()) for a in self.arenas]

    def __getitem__(self, rank: int) -> ShmPointToPoint:
        return self.engines[rank]

    def close(self, ranks=None) -> None:
        for rank in ranks if ranks is not None else range(len(self.engines)):
            self.engines[rank].close()
        if ranks is None:
            for arena in self.arenas:
                arena.close()


@pytest.fixture
def shm_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(shm_files, "SHM_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def host2(shm_dir):
    host = Host(2)
    yield host
    host.close()


def never_fails():
    return None


def recv(engine, array, src, tag=0, group=0, peers=None, check=never_fails):
    """Post a receive and wait for it (as p2p.recv does after its fast path)."""
    peers = peers if peers is not None else [src]
    return engine.post("recv", array, src, tag, group, peers, check).result()


def test_a_message_arrives_whole_with_its_sender(host2):
    sent = np.arange(10, dtype=np.int16)
    host2[0].send(1, 0, 5, sent)
    got = np.zeros(10, np.int16)
    assert host2[1].receive_ready(got, 0, 5, 0, None) == 0
    np.testing.assert_array_equal(got, sent)
    assert host2[1].receive_ready(got, 0, 5, 0, None) is None      # nothing more


def test_a_send_records_its_wake_beside_the_doorbell(host2):
    """The receiver tells a lost wake from a late sender by this record (``wakeups.py``)."""
    receiver = host2.arenas[1].own
    before = time.perf_counter_ns()
    host2[0].send(1, 0, 5, np.zeros(1, np.int8))
    after = time.perf_counter_ns() + 2 ** (wakeups.WAKE_TIME_SHIFT + 1)
    record, value = receiver.doorbell_woken.value, receiver.doorbell.value
    assert wakeups.woke_before(record, value, after)
    assert not wakeups.woke_before(record, value, before)


def test_one_sender_one_tag_in_order_other_tags_stashed(host2):
    for i in range(6):
        host2[0].send(1, 0, i % 2, np.full(3, i, np.int64))
    got = np.empty(3, np.int64)
    odd = [recv(host2[1], got, 0, tag=1) is not None and int(got[0]) for _ in range(3)]
    even = [recv(host2[1], got, 0, tag=0) is not None and int(got[0]) for _ in range(3)]
    assert odd == [1, 3, 5] and even == [0, 2, 4]
    assert host2[1].counts["stashed"] == 3


def test_groups_keep_their_messages_apart(host2):
    host2[0].send(1, 7, 0, np.full(2, 7.0))
    host2[0].send(1, 0, 0, np.full(2, 0.0))
    got = np.empty(2)
    recv(host2[1], got, 0, group=0)
    assert got[0] == 0.0
    recv(host2[1], got, 0, group=7)
    assert got[0] == 7.0


def test_any_source_takes_from_every_sender_and_stashed_first(shm_dir):
    host = Host(3)
    try:
        host[2].send(0, 0, 4, np.array([2]))
        host[1].send(0, 0, 9, np.array([-1]))         # another tag: stashed on the way
        host[1].send(0, 0, 4, np.array([1]))
        got = np.empty(1, np.int64)
        assert recv(host[0], got, 1, tag=9) == 1
        senders = sorted(recv(host[0], got, None, tag=4, peers=[1, 2]) for _ in range(2))
        assert senders == [1, 2]
    finally:
        host.close()


@pytest.mark.parametrize("nbytes", [0, 1, 63, 64, 65, 40_000, 300_000, 3_000_001])
def test_sizes_across_ring_ends_and_growth(host2, nbytes):
    rng = np.random.default_rng(nbytes)
    messages = [rng.integers(0, 255, nbytes, dtype=np.uint8) for _ in range(5)]
    for message in messages:                         # all sent before any is received
        host2[0].send(1, 0, 0, message)
    for message in messages:
        got = np.empty(nbytes, np.uint8)
        recv(host2[1], got, 0)
        np.testing.assert_array_equal(got, message)
    assert (host2[0].stats()["grown_rings"] > 0) == (5 * channel.record_bytes(nbytes) >
                                                     channel.FIRST_RING_BYTES - 256)


def test_a_grown_ring_leaves_no_name_once_read(host2, shm_dir):
    host2[0].send(1, 0, 0, np.ones(200_000))
    assert [p.name for p in shm_dir.iterdir() if p.name.endswith("-p2p")]   # until read
    recv(host2[1], np.empty(200_000), 0)
    assert list(shm_dir.iterdir()) == []


def test_mismatch_names_both_sides_and_the_channel_carries_on(host2):
    host2[0].send(1, 0, 3, np.ones(4, np.float32))
    host2[0].send(1, 0, 3, np.ones(5, np.float32))
    with pytest.raises(CollectiveMismatchError, match=r"float32\[4\].*float64\[4\]"):
        recv(host2[1], np.empty(4, np.float64), 0, tag=3)
    got = np.empty(5, np.float32)
    assert recv(host2[1], got, 0, tag=3) == 0 and got.sum() == 5


def test_a_receive_that_cannot_complete_fails_and_is_withdrawn(host2):
    def times_out():
        raise TimeoutError("recv(tag=1)", None, [0], 0.0, 1)
    with pytest.raises(TimeoutError):
        recv(host2[1], np.empty(1), 0, tag=1, check=times_out)
    host2[0].send(1, 0, 1, np.full(1, 8.0))                # goes to the next receive
    got = np.empty(1)
    recv(host2[1], got, 0, tag=1)
    assert got[0] == 8.0


def test_posted_receives_complete_in_post_order_from_any_thread(host2):
    first, second = np.empty(1), np.empty(1)
    works = [host2[1].post("irecv", a, 0, 0, 0, [0], never_fails) for a in (first, second)]
    assert not works[0].is_completed()
    host2[0].send(1, 0, 0, np.array([1.0]))
    host2[0].send(1, 0, 0, np.array([2.0]))
    works[1].wait()                   # drives: completes the first posted receive as well
    assert works[0].is_completed() and (first[0], second[0]) == (1.0, 2.0)


def test_a_callback_is_called_without_anyone_waiting(host2):
    called = threading.Event()
    work = host2[1].post("irecv", np.empty(1), 0, 0, 0, [0], never_fails)
    work.add_done_callback(lambda w: called.set())
    host2[0].send(1, 0, 0, np.ones(1))
    assert called.wait(10), "the background driver never completed the receive"
    assert work.result() == 0


def test_a_writer_that_leaves_first_still_delivers(host2, shm_dir):
    big = np.arange(500_000, dtype=np.float64)
    host2[0].send(1, 0, 0, big)
    host2.close([0])                 # rank 0 destroys its group; rank 1 is alive
    got = np.empty_like(big)
    recv(host2[1], got, 0)
    np.testing.assert_array_equal(got, big)
    assert list(shm_dir.iterdir()) == []


def test_unread_grown_rings_are_removed_by_the_reader_on_close(host2, shm_dir):
    host2[0].send(1, 0, 0, np.ones(200_000))
    host2[0].send(1, 0, 0, np.ones(2_000_000))            # grows twice before any read
    host2.close([1])
    assert list(shm_dir.iterdir()) == []


def test_unread_grown_rings_of_a_lost_reader_are_removed_by_the_writer(host2, shm_dir):
    host2[0].send(1, 0, 0, np.ones(200_000))
    host2.lost[0][1] = "its connection closed without a goodbye"
    host2.close([0])
    assert list(shm_dir.iterdir()) == []


def test_a_grown_ring_is_mapped_only_if_private(host2, shm_dir):
    host2[0].send(1, 0, 0, np.ones(200_000))
    (grown,) = [p for p in shm_dir.iterdir() if p.name.endswith("-p2p")]
    assert os.stat(grown).st_mode & 0o777 == 0o600
    os.chmod(grown, 0o644)
    with pytest.raises(PeerLostError, match="not private"):
        recv(host2[1], np.empty(200_000), 0)
    os.chmod(grown, 0o600)


def test_a_grow_record_naming_anything_else_is_refused():
    with pytest.raises(OSError, match="no ring of ringrt's"):
        channel.Ring.open_grown("../etc/passwd", 4096)
    with pytest.raises(OSError, match="no ring of ringrt's"):
        channel.Ring.open_grown("ringrt-1-x-0", 4096)


def test_a_grown_ring_removed_before_it_was_read_loses_its_messages_by_name(host2, shm_dir):
    host2[0].send(1, 0, 0, np.ones(200_000))
    host2.close([0])                                   # the writer left
    for grown in shm_dir.iterdir():                    # and another job swept its ring
        grown.unlink()
    for _ in range(2):
        with pytest.raises(PeerLostError, match="rank 0 lost during recv.*cannot be mapped"):
            recv(host2[1], np.empty(200_000), 0)


def test_after_close_sends_and_receives_say_the_group_is_gone(host2):
    pending = host2[1].post("irecv", np.empty(1), 0, 0, 0, [0], never_fails)
    host2.close([0, 1])
    with pytest.raises(NotInitializedError, match="destroyed"):
        host2[0].send(1, 0, 0, np.ones(1))
    with pytest.raises(NotInitializedError, match="destroyed"):
        pending.wait()
    with pytest.raises(NotInitializedError, match="destroyed"):
        recv(host2[1], np.empty(1), 0)


def test_a_full_dev_shm_refuses_the_message_saying_what_to_do(host2, monkeypatch):
    def no_room(path, size, create):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(shm, "map_private", no_room)
    with pytest.raises(DistError, match="nothing was sent.*RINGRT_P2P=sockets"):
        host2[0].send(1, 0, 0, np.ones(200_000))
    host2[0].send(1, 0, 0, np.ones(10))                  # fits the first ring: still works
    got = np.empty(10)
    assert recv(host2[1], got, 0) == 0 and got.sum() == 10
