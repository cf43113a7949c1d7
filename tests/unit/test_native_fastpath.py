"""The C module's small all_reduce (ringrt/_native/_fastpath.c) in one process: two ranks'
control blocks and half slots laid out in NumPy buffers as ShmArena lays them out, the peer's
side written by the test. Each hand-over status, the from_step resumptions, the wake only
when a sleepers byte is set, and the guard rails on bad arguments."""

import os

import numpy as np
import pytest

from ringrt import _native
from ringrt._comm import shm
from ringrt._comm.tickets import encode_ticket
from ringrt._comm.wire import DTYPE_CODES
from ringrt._reduce_ops import ReduceOp

fastpath = _native.fastpath
pytestmark = pytest.mark.skipif(fastpath is None, reason="the C module is not built here")

HALF = 4096
F32 = DTYPE_CODES[np.dtype(np.float32)]


class TwoRanks:
    """Rank 0 (us) and rank 1 (the test plays it): control blocks and both half slots."""

    def __init__(self, dtype_code=F32, op=ReduceOp.SUM):
        self.control = [np.zeros(shm.CONTROL_BYTES, np.uint8) for _ in range(2)]
        self.halves = [[np.zeros(HALF, np.uint8) for _ in range(2)] for _ in range(2)]
        for block in self.control:                    # staged = -1, as a new segment has
            block[shm._STAGED_AT:shm._STAGED_AT + 16].view(np.int64)[:] = -1
        base = [c.__array_interface__["data"][0] for c in self.control]
        own = base[0]
        self.plan = fastpath.Plan(
            0, 2, dtype_code, int(op), True, HALF,
            tuple(b + shm._TICKET_AT for b in base), tuple(b + shm._STAGED_AT for b in base),
            tuple(b + shm._PUBLISHED_AT for b in base),
            *(tuple(self.halves[parity][q].__array_interface__["data"][0] for q in range(2))
              for parity in (0, 1)),
            own + shm._RELEASE_AT, own + shm._TICKET_WOKEN_AT, own + shm._RELEASE_WOKEN_AT,
            own + shm.SLEEPERS_AT, (self.control, self.halves))

    def word(self, rank, at, dtype=np.uint32):
        return self.control[rank][at:at + np.dtype(dtype).itemsize].view(dtype)

    def publish(self, rank, fields):
        self.control[rank][shm._PUBLISHED_AT:shm._PUBLISHED_AT + 64].view(np.int64)[:] = fields

    def peer_arrives(self, seq, values, dtype=np.float32):
        """Rank 1 stages ``values`` for op ``seq`` and sets its ticket (step 1)."""
        half = self.halves[seq & 1][1].view(dtype)
        half[:len(values)] = values
        self.word(1, shm._STAGED_AT + 8 * (seq & 1), np.int64)[0] = seq
        self.word(1, shm._TICKET_AT)[0] = encode_ticket(seq, 1)


CALL = [1, 5, 1, F32, 3, -1, 1, 1]       # group, seq, op, dtype, count, root, redop, shm


def test_a_routine_op_sums_in_rank_order_and_releases():
    ranks = TwoRanks()
    ranks.publish(0, CALL)
    ranks.publish(1, CALL)
    ranks.peer_arrives(5, [10.0, 20.0, 30.0])
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert ranks.plan.run(x, 3, 5, 0, 1_000_000) == 0
    assert x.tolist() == [11.0, 22.0, 33.0]
    assert ranks.word(0, shm._TICKET_AT)[0] == encode_ticket(5, 1)
    assert ranks.word(0, shm._RELEASE_AT)[0] == encode_ticket(5, 2)
    assert ranks.halves[1][0].view(np.float32)[:3].tolist() == [1.0, 2.0, 3.0]   # staged
    # nobody sleeps: no wake, so no wake record either
    assert ranks.word(0, shm._TICKET_WOKEN_AT, np.uint64)[0] == 0


def test_a_sleeper_is_woken_and_the_wake_recorded():
    ranks = TwoRanks()
    ranks.publish(0, CALL)
    ranks.publish(1, CALL)
    ranks.control[0][shm.SLEEPERS_AT + 1] = 1       # rank 1 sleeps on one of our words
    ranks.peer_arrives(5, [1.0, 1.0, 1.0])
    assert ranks.plan.run(np.ones(3, np.float32), 3, 5, 0, 1_000_000) == 0
    stamp = int(ranks.word(0, shm._TICKET_WOKEN_AT, np.uint64)[0])
    assert stamp & 0xFFFFFFFF == encode_ticket(5, 1) and stamp >> 32
    assert int(ranks.word(0, shm._RELEASE_WOKEN_AT, np.uint64)[0]) & 0xFFFFFFFF == \
        encode_ticket(5, 2)


def test_a_late_peer_hands_back_then_the_op_goes_on_from_the_checks():
    ranks = TwoRanks()
    ranks.publish(0, CALL)
    ranks.publish(1, CALL)
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert ranks.plan.run(x, 3, 5, 0, 0) == 1                   # signalled, peer missing
    assert ranks.word(0, shm._TICKET_AT)[0] == encode_ticket(5, 1)
    assert ranks.word(0, shm._RELEASE_AT)[0] == 0 and x.tolist() == [1.0, 2.0, 3.0]
    ranks.peer_arrives(5, [4.0, 4.0, 4.0])
    assert ranks.plan.run(x, 3, 5, 1, 0) == 0
    assert x.tolist() == [5.0, 6.0, 7.0]


def test_another_published_call_hands_back_to_the_python_checks():
    ranks = TwoRanks()
    ranks.publish(0, CALL)
    ranks.publish(1, [*CALL[:4], 4, *CALL[5:]])                 # the peer's count differs
    ranks.peer_arrives(5, [4.0, 4.0, 4.0])
    x = np.array([1.0, 2.0, 3.0], np.float32)
    assert ranks.plan.run(x, 3, 5, 0, 1_000_000) == 2
    assert x.tolist() == [1.0, 2.0, 3.0] and ranks.word(0, shm._RELEASE_AT)[0] == 0
    assert ranks.plan.run(x, 3, 5, 2, 0) == 0                   # checked by Python: reduce
    assert x.tolist() == [5.0, 6.0, 7.0]


def test_a_peer_not_in_this_op_hands_back():
    ranks = TwoRanks()
    ranks.publish(0, CALL)
    ranks.publish(1, CALL)
    ranks.word(1, shm._TICKET_AT)[0] = encode_ticket(6, 1)     # already in op 6 ...
    x = np.ones(3, np.float32)                                   # ... and not staged for 5
    assert ranks.plan.run(x, 3, 5, 0, 1_000_000) == 2


def test_integer_sums_wrap_as_numpys_do():
    ranks = TwoRanks(DTYPE_CODES[np.dtype(np.int8)], ReduceOp.SUM)
    call = [1, 7, 1, DTYPE_CODES[np.dtype(np.int8)], 2, -1, 1, 1]
    ranks.publish(0, call)
    ranks.publish(1, call)
    ranks.peer_arrives(7, [100, -100], np.int8)
    x = np.array([100, -100], np.int8)
    assert ranks.plan.run(x, 2, 7, 0, 1_000_000) == 0
    mine = theirs = np.array([100, -100], np.int8)
    assert x.tolist() == (mine + theirs).tolist() == [-56, 56]


def test_bad_arguments_are_refused_before_anything_is_touched():
    ranks = TwoRanks()
    with pytest.raises(ValueError, match="does not fit"):
        ranks.plan.run(np.ones(2000, np.float32), 2000, 5, 0, 0)
    with pytest.raises(ValueError, match="smaller than count"):
        ranks.plan.run(np.ones(2, np.float32), 3, 5, 0, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        ranks.plan.run(np.ones(4, np.float32)[::2], 2, 5, 0, 0)
    frozen = np.ones(3, np.float32)
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        ranks.plan.run(frozen, 3, 5, 0, 0)
    with pytest.raises(ValueError, match="null address"):
        ranks.plan.run(0, 3, 5, 0, 0)
    with pytest.raises(TypeError):
        ranks.plan.run(np.ones(3, np.float32), 3, 5)
    assert ranks.word(0, shm._TICKET_AT)[0] == 0                 # nothing was signalled
    with pytest.raises(ValueError, match="not compiled"):
        TwoRanks(DTYPE_CODES[np.dtype(np.float16)])
    assert fastpath.supports(F32, int(ReduceOp.SUM))
    assert not fastpath.supports(F32, int(ReduceOp.MAX))        # NumPy's NaN rules: Python


def _cpu_now() -> int:
    """The CPU this thread last ran on (/proc: field 39, ``processor``)."""
    with open("/proc/thread-self/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[36])


def _late_peer_run(ranks, peer_cpu_word: int):
    """Op 5 with the peer missing, its CPU word set; spins 200 µs, which is past MOVE_AFTER_NS."""
    ranks.publish(0, CALL)
    ranks.publish(1, CALL)
    ranks.word(1, shm._CPU_AT, np.int32)[0] = peer_cpu_word
    return ranks.plan.run(np.ones(3, np.float32), 3, 5, 0, 200_000)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to move between")
def test_a_late_peer_waiting_for_our_cpu_makes_us_move_and_the_mask_is_restored():
    allowed = os.sched_getaffinity(0)
    here = min(allowed)
    try:
        for _ in range(5):                  # the kernel may move us first: then try again
            os.sched_setaffinity(0, {here})
            os.sched_setaffinity(0, allowed)
            ranks = TwoRanks()
            assert _late_peer_run(ranks, here + 1) == 1
            if _cpu_now() != here or ranks.plan.last_moved:
                break
        assert ranks.plan.last_moved is True
        assert _cpu_now() != here
        assert ranks.word(0, shm._CPU_AT, np.int32)[0] == _cpu_now() + 1   # where it went
        assert os.sched_getaffinity(0) == allowed
    finally:
        os.sched_setaffinity(0, allowed)


def test_a_late_peer_elsewhere_or_unknown_leaves_us_where_we_are():
    allowed = os.sched_getaffinity(0)
    for peer_word in (0, 10_000):           # unknown; a CPU that is not ours
        ranks = TwoRanks()
        assert _late_peer_run(ranks, peer_word) == 1
        assert ranks.plan.last_moved is False
        assert ranks.word(0, shm._CPU_AT, np.int32)[0] == _cpu_now() + 1
    assert os.sched_getaffinity(0) == allowed
