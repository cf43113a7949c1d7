"""The op executor: call order, done-callbacks outside the lock, callbacks that start ops."""

import threading

import pytest

from ringrt._comm.work import Executor


@pytest.fixture
def executor():
    ex = Executor("test-ops")
    yield ex
    ex.drain(5)
    ex.close()


def test_callbacks_run_after_the_op_left_the_queue_with_the_lock_free(executor):
    seen = []
    gate = threading.Event()

    def callback(work):
        seen.append((work.result(), executor._lock.locked(), len(executor._queue)))
        gate.set()

    work = executor.submit(lambda: 42, "answer")
    work.add_done_callback(callback)
    assert gate.wait(5)
    assert seen == [(42, False, 0)]
    late = []
    work.add_done_callback(lambda w: late.append(w.result()))     # already done: runs now
    assert late == [42]


def test_a_callback_may_block_on_ops_queued_behind_it_and_order_is_kept(executor):
    order, done = [], threading.Event()
    release = threading.Event()

    def first():
        release.wait(5)
        order.append("first")

    def chained(_work):
        # on the executor thread: "second" is queued behind us; a blocking op must run it
        # first, and waiting on an op queued behind must not wait for this very thread
        order.append(executor.run(lambda: "blocking", "blocking op"))
        third = executor.submit(lambda: order.append("third"), "third")
        third.wait(5)
        done.set()

    head = executor.submit(first, "first")
    head.add_done_callback(chained)
    executor.submit(lambda: order.append("second"), "second")
    release.set()
    assert done.wait(5)
    assert order == ["first", "second", "blocking", "third"]


def test_an_error_reaches_the_waiter_and_the_callback(executor):
    errors = []
    work = executor.submit(lambda: 1 / 0, "divide")
    work.add_done_callback(lambda w: errors.append(type(w.exception()).__name__))
    with pytest.raises(ZeroDivisionError):
        work.wait(5)
    assert errors == ["ZeroDivisionError"]


def test_a_raising_callback_does_not_stop_the_executor(executor, capsys):
    work = executor.submit(lambda: None, "noop")
    work.add_done_callback(lambda w: 1 / 0)
    work.wait(5)
    assert executor.submit(lambda: "alive", "next").result() == "alive"


def test_a_job_waited_for_right_away_runs_on_the_waiting_thread():
    """White box: jobs queued with no loop thread to run them (as if it had not woken yet);
    waiting for the head runs it here; a job behind another is not jumped ahead."""
    from ringrt._comm.work import Work

    executor = Executor("no-threads")
    ran = []
    first, second = Work("first", executor), Work("second", executor)
    executor._queue.extend([(lambda: ran.append("first") or threading.current_thread().name,
                             first),
                            (lambda: ran.append("second"), second)])
    executor.run_if_next(second)                # not the head: must not run
    assert ran == [] and not second.is_completed()
    assert first.result() == threading.current_thread().name
    second.wait(5)
    assert ran == ["first", "second"] and not executor._queue
