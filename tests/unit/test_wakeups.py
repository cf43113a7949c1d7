"""The shared-memory wait and its counters (``_comm/shm.py``, ``_comm/wakeups.py``) in one
process: two ranks' arenas, a peer simulated by a thread, wakes delivered or suppressed.

``tests/dist/test_wakeups.py`` asserts zero missed wake-ups across processes; these tests show
that the counter counts one when a wake is lost, so that assertion can fail, and never counts a
peer that is only late (one preempted between its store and its wake, once counted as lost).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading
import time

import pytest

from ringrt._comm import futex, shm, shm_files, wakeups
from ringrt._comm.shm import ShmArena
from ringrt._comm.tickets import encode_ticket

pytestmark = pytest.mark.skipif(not futex.AVAILABLE, reason="needs Linux futexes")


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """Rank 0's and rank 1's arenas, attached to each other."""
    monkeypatch.setattr(shm_files, "SHM_DIR", str(tmp_path))
    arenas = [ShmArena(r, 2) for r in range(2)]
    for arena in arenas:
        arena.attach({a.rank: a.card for a in arenas})
    yield arenas
    for arena in arenas:
        arena.close()


def _in_futex_wait(thread_id: int, address: int) -> bool:
    """Whether the thread ``thread_id`` (a native id) is blocked in a futex call on
    ``address``: the kernel's own word for it (``/proc/self/task/TID/syscall`` gives the
    syscall's number and arguments while it blocks, "running" otherwise)."""
    try:
        with open(f"/proc/self/task/{thread_id}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == str(futex._SYS_FUTEX) and \
        int(fields[1], 16) == address


def once_asleep(address: int, action, after: threading.Event | None = None
                ) -> threading.Thread:
    """Run ``action`` on a helper thread once the calling thread sleeps on the futex at
    ``address`` (and, with ``after``, once that event is set first): a signal, not a race
    with how soon each thread is scheduled (a thread that slept a fixed time could fire
    before the wait had begun on a loaded machine)."""
    waiter = threading.get_native_id()

    def run():
        deadline = time.monotonic() + 30
        if after is not None:
            assert after.wait(30), "the waiter never reached the expected point"
        while not _in_futex_wait(waiter, address):
            assert time.monotonic() < deadline, "the waiter never slept on the futex"
            time.sleep(0.0005)                       # polling the kernel's state, not a delay
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def once_waiting(arena: ShmArena, action) -> threading.Thread:
    """Run ``action`` on a helper thread once ``arena`` has begun a wait (counted it), so the
    wait is never already satisfied when it starts."""
    began = threading.Event()
    of = arena.tally.of
    arena.tally.of = lambda kind: (began.set(), of(kind))[1]
    thread = threading.Thread(target=lambda: (began.wait(30), action()))
    thread.start()
    return thread


def no_check(pending):
    pass


def counts(arena: ShmArena, kind: str = "all_reduce") -> dict:
    return arena.tally.snapshot()["by_op"][kind]


def wait_for_signal(waiter: ShmArena, peer: ShmArena, kind: str) -> float:
    """``waiter`` waits, as op kind ``kind``, for ``peer`` to signal once the waiter sleeps
    on the futex; returns how long the wait took (s)."""
    target = encode_ticket(1, 1)
    thread = once_asleep(waiter.segments[1].ticket_address, lambda: peer.signal(target))
    start = time.perf_counter()
    waiter.wait([1], target, no_check, kind=kind)
    thread.join()
    return time.perf_counter() - start


def test_a_delivered_wake_ends_the_sleep_early_and_counts_as_a_wakeup(pair, monkeypatch):
    waiter, peer = pair
    monkeypatch.setattr(shm, "SLICE_SECONDS", 2.0)    # a busy machine may delay the peer
    assert wait_for_signal(waiter, peer, "all_reduce") < shm.SLICE_SECONDS   # not a whole slice
    got = counts(waiter)
    assert got["waits"] == 1 and got["sleeps"] == 1 and got["wakeups"] == 1
    assert got["timeouts"] == 0 and got["missed_wakeups"] == 0 and got["spins"] == 0
    assert got["slept_seconds"] > 0 and got["spin_seconds"] >= shm.SPIN_SECONDS * 0.9


def test_a_suppressed_wake_is_counted_as_missed(pair, monkeypatch):
    """The peer stores its ticket but its FUTEX_WAKE never happens (its wake record is still
    written, as after a wake that returned): the waiter sleeps the whole slice, finds the word
    changed and a wake of the new value recorded before the slice ran out: a missed wake-up."""
    waiter, peer = pair
    monkeypatch.setattr(futex, "wake", lambda address: None)
    first_sleep = shm.FIRST_SLEEP_SECONDS if waiter.skip_idle_wakes else shm.SLICE_SECONDS
    assert wait_for_signal(waiter, peer, "broadcast") >= first_sleep * 0.9
    got = counts(waiter, "broadcast")
    assert got["missed_wakeups"] == 1 and got["wakeups"] == 0
    assert got["timeouts"] >= 1          # more only if the peer's store came after a slice
    totals = waiter.tally.snapshot()
    assert totals["missed_wakeups"] == 1 and totals["by_op"].keys() == {"broadcast"}


def test_a_peer_preempted_between_its_store_and_its_wake_is_not_counted_as_missed(
        pair, monkeypatch):
    """The old false positive: the peer stores its ticket, then loses its core before
    FUTEX_WAKE (here: its wake blocks until the wait is over). The waiter's slice runs out and
    it finds the word changed, on time, which the old heuristic (a change read within
    ``ON_TIME_S`` of the slice's end) counted as a lost wake. No wake of that value has
    returned yet, so none was lost: a plain timeout."""
    waiter, peer = pair
    resumed = threading.Event()                     # the peer gets its core back
    wake = futex.wake
    monkeypatch.setattr(futex, "wake", lambda address: (resumed.wait(30), wake(address)))
    target = encode_ticket(1, 1)
    thread = once_asleep(waiter.segments[1].ticket_address, lambda: peer.signal(target))
    waiter.wait([1], target, no_check, kind="all_reduce")
    resumed.set()
    thread.join()
    got = counts(waiter)
    assert got["timeouts"] >= 1 and got["missed_wakeups"] == 0 and got["wakeups"] == 0


def _wait_where_the_peer_acts_in_the_sleep(monkeypatch, action) -> list:
    """One :func:`wakeups.sleep` on a word holding 6 whose futex call is replaced: ``action
    (word, woken, start_ns)`` plays the peer during the sleep, then the slice runs out.
    Returns the counters."""
    buffer = mmap.mmap(-1, 4096)
    word = ctypes.c_uint32.from_buffer(buffer)
    woken = ctypes.c_uint64.from_buffer(buffer, 8)
    word.value = 6
    woken.value = wakeups.stamp(6)                  # the wake of the value slept on
    start = []
    clock = time.perf_counter_ns
    monkeypatch.setattr(time, "perf_counter_ns", lambda: start.append(clock()) or start[-1])

    def timed_out(address, expected, timeout_s):
        action(word, woken, start[0])
        return futex.TIMED_OUT

    monkeypatch.setattr(futex, "wait", timed_out)
    entry = wakeups.new_entry()
    wakeups.sleep(entry, word, woken, ctypes.addressof(word), 6, 0.02)
    monkeypatch.undo()
    del word, woken
    buffer.close()
    return entry


def _recorded(value: int, at_ns: int) -> int:
    return at_ns >> wakeups.WAKE_TIME_SHIFT << 32 | value


SLICE_NS = 20_000_000


@pytest.mark.parametrize("case,woken_at_ns,missed", [
    ("woken during the sleep", SLICE_NS // 2, 1),
    ("woken just before the slice ran out", SLICE_NS - 2 ** (wakeups.WAKE_TIME_SHIFT + 1), 1),
    ("woken after the slice ran out: a late peer", SLICE_NS + 1_000_000, 0),
    ("not woken yet: a preempted peer", None, 0),
])
def test_a_miss_is_counted_only_if_the_new_value_was_woken_before_the_slice_ran_out(
        monkeypatch, case, woken_at_ns, missed):
    """The peer's fields written directly (the word, then its wake record) while the waiter
    sleeps; the record's time relative to the sleep's start."""
    def peer(word, woken, start_ns):
        word.value = 7
        if woken_at_ns is not None:
            woken.value = _recorded(7, start_ns + woken_at_ns)

    entry = _wait_where_the_peer_acts_in_the_sleep(monkeypatch, peer)
    assert entry[wakeups.TIMEOUTS] == 1 and entry[wakeups.MISSED_WAKEUPS] == missed, case


def test_an_earlier_signals_wake_record_is_not_taken_for_the_new_values(monkeypatch):
    """A record of the value slept on (or older) was written before the sleep's end, but
    says nothing about the new value: its peer may be preempted before waking."""
    def peer(word, woken, start_ns):
        woken.value = _recorded(6, start_ns + SLICE_NS // 2)   # 6's wake returns late...
        word.value = 7                                         # ...7's has not yet

    entry = _wait_where_the_peer_acts_in_the_sleep(monkeypatch, peer)
    assert entry[wakeups.TIMEOUTS] == 1 and entry[wakeups.MISSED_WAKEUPS] == 0


@pytest.mark.parametrize("deadline_ns", [0, 2 ** (32 + wakeups.WAKE_TIME_SHIFT) - 1,
                                         2 ** (32 + wakeups.WAKE_TIME_SHIFT) + 5000])
def test_the_wake_time_compares_across_its_wrap(deadline_ns):
    """A record keeps 32 bits of time (73 minutes): compared modulo, as tickets are."""
    assert wakeups.woke_before(_recorded(7, deadline_ns - 5000), 7, deadline_ns)
    assert not wakeups.woke_before(_recorded(7, deadline_ns + 5000), 7, deadline_ns)
    assert not wakeups.woke_before(_recorded(6, deadline_ns - 5000), 7, deadline_ns)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's clocks")
def test_the_wake_clock_is_one_clock_for_every_process():
    """A wake record is written by one process and read by another: their perf_counter must
    be CLOCK_MONOTONIC (system-wide), as CPython's is on Linux, not a per-process clock."""
    assert "CLOCK_MONOTONIC" in time.get_clock_info("perf_counter").implementation


@pytest.mark.parametrize("word", ["ticket", "release"])
def test_every_signal_records_its_wake_after_waking(pair, word, monkeypatch):
    _waiter, peer = pair
    woken = getattr(peer.own, f"{word}_woken")
    seen_at_wake = []
    wake = futex.wake
    monkeypatch.setattr(futex, "wake", lambda address: (seen_at_wake.append(woken.value),
                                                        wake(address)))
    value = encode_ticket(5, 2)
    peer.own.map[shm.SLEEPERS_AT + 0] = 1               # rank 0 sleeps on one of its words
    before = time.perf_counter_ns()
    (peer.signal if word == "ticket" else peer.signal_release)(value)
    after = time.perf_counter_ns() + 2 ** (wakeups.WAKE_TIME_SHIFT + 1)
    assert seen_at_wake == [0]                           # not recorded before the wake
    assert woken.value & 0xFFFFFFFF == value
    assert wakeups.woke_before(woken.value, value, after)
    assert not wakeups.woke_before(woken.value, value, before)


@pytest.mark.parametrize("word", ["ticket", "release"])
def test_a_signal_nobody_sleeps_on_makes_no_wake_call(pair, word, monkeypatch):
    """Skipping the FUTEX_WAKE nobody needs (see ``shm``'s ``sleepers``): no call, no wake
    record; the word is set all the same. Where stores may be seen out of order, every
    signal wakes."""
    _waiter, peer = pair
    calls = []
    wake = futex.wake
    monkeypatch.setattr(futex, "wake", lambda address: (calls.append(address), wake(address)))
    (peer.signal if word == "ticket" else peer.signal_release)(encode_ticket(3, 1))
    assert getattr(peer.own, word).value == encode_ticket(3, 1)
    assert len(calls) == (0 if peer.skip_idle_wakes else 1)
    peer.own.map[shm.SLEEPERS_AT + 0] = 1
    (peer.signal if word == "ticket" else peer.signal_release)(encode_ticket(3, 2))
    assert len(calls) == (1 if peer.skip_idle_wakes else 2)


def test_a_sleeping_waiter_marks_itself_in_the_peer_segment_and_is_woken(pair):
    """While rank 0 sleeps on rank 1's ticket its byte in rank 1's sleepers is set (so rank
    1's signal wakes it: the wait ends on a wake, not a timeout), and cleared after."""
    waiter, peer = pair
    target = encode_ticket(1, 1)
    marked = []
    thread = once_asleep(waiter.segments[1].ticket_address,
                         lambda: (marked.append(peer.own.map[shm.SLEEPERS_AT]),
                                  peer.signal(target)))
    waiter.wait([1], target, no_check, kind="barrier")
    thread.join()
    got = counts(waiter, "barrier")
    assert got["wakeups"] + got["changed"] == 1 and got["timeouts"] == 0
    assert marked == [1 if waiter.skip_idle_wakes else 0]
    assert peer.own.map[shm.SLEEPERS_AT] == 0


def test_a_peer_that_is_just_late_times_out_without_a_missed_wakeup(pair):
    waiter, peer = pair
    target = encode_ticket(1, 1)
    checks = []
    timed_out = threading.Event()                    # the peer comes after the first slice
    thread = once_asleep(waiter.segments[1].ticket_address, lambda: peer.signal(target),
                         after=timed_out)
    waiter.wait([1], target, lambda pending: (checks.append(list(pending)), timed_out.set()),
                kind="barrier")
    thread.join()
    got = counts(waiter, "barrier")
    assert got["timeouts"] >= 1 and got["missed_wakeups"] == 0 and got["wakeups"] == 1
    assert checks == [[1]] * got["timeouts"]           # check() runs after each timeout


def test_a_word_that_changed_before_the_call_returns_at_once_as_changed():
    word = ctypes.c_uint32.from_buffer(buffer := mmap.mmap(-1, 4096))
    woken = ctypes.c_uint64.from_buffer(buffer, 8)
    word.value = 7
    entry = wakeups.new_entry()
    start = time.perf_counter()
    assert wakeups.sleep(entry, word, woken, ctypes.addressof(word), 6, 1.0) == futex.CHANGED
    assert time.perf_counter() - start < 0.5
    assert entry[wakeups.CHANGED] == 1 and entry[wakeups.MISSED_WAKEUPS] == 0
    del word, woken
    buffer.close()


def test_a_wait_on_the_wrong_word_is_counted_as_overslept(pair, monkeypatch):
    """A release wait sleeps on the release word; a peer that moved on to a later op (its
    ticket) without releasing ends the wait only at the slice's end: ``overslept``."""
    waiter, peer = pair
    target = encode_ticket(1, 3)
    thread = once_asleep(waiter.segments[1].release_address,
                         lambda: peer.signal(encode_ticket(2, 1)))
    waiter.wait([1], target, no_check, release=True, kind="all_reduce")
    thread.join()
    got = counts(waiter)
    assert got["overslept"] == 1 and got["missed_wakeups"] == 0


def test_spins_count_waits_that_never_slept(pair):
    waiter, peer = pair
    target = encode_ticket(1, 1)
    peer.signal(target)
    waiter.wait([1], target, no_check, kind="all_reduce")    # already there: not a wait
    thread = once_waiting(waiter, lambda: peer.signal(encode_ticket(1, 2)))
    waiter.spin_seconds = 600.0                       # spins until the signal, however late
    waiter.wait([1], encode_ticket(1, 2), no_check, kind="all_reduce")
    thread.join()
    got = counts(waiter)
    assert got["waits"] == 1 and got["spins"] == 1 and got["sleeps"] == 0


def test_the_spin_grows_when_peers_arrive_just_after_we_slept(pair):
    waiter, _peer = pair
    base = waiter.spin_seconds
    waiter._adapt_spin(0.0001)                       # the peer came 100 us into the wait
    assert waiter.spin_seconds == pytest.approx(0.0002)
    waiter._adapt_spin(0.05)                         # a slow peer: spinning would not help
    assert waiter.spin_seconds == pytest.approx(0.0002)
    waiter._adapt_spin(0.00039)
    assert base < waiter.spin_seconds == shm.MAX_SPIN_SECONDS


def test_the_spin_never_grows_with_more_ranks_than_cores(pair):
    waiter, peer = pair
    waiter.oversubscribed = True
    base = waiter.spin_seconds
    thread = once_asleep(waiter.segments[1].ticket_address,
                         lambda: peer.signal(encode_ticket(1, 1)))
    waiter.wait([1], encode_ticket(1, 1), no_check)
    thread.join()
    assert waiter.spin_seconds == base
