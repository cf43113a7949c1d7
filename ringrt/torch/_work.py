"""torch ``Work`` handles for ringrt ops, and the futures DDP waits on.

A blocking op (``opts.asyncOp`` False, which ``dist.all_reduce(t)`` passes) runs inline on
the caller's thread and returns a completed :class:`RingrtWork`. An async op
(``async_op=True``, and every op DDP's reducer starts) is queued on ringrt's in-order
executor thread; its ``torch.futures.Future`` completes on that thread once the data is
there -- after ringrt released its lock and dequeued the op, so a ``then`` callback may start
more ops -- with the op's tensors as its value, or with ringrt's own exception
(``PeerLostError``, ``CollectiveMismatchError``, ``TimeoutError``): ``work.wait()``,
``fut.wait()`` and ``loss.backward()`` raise it.

A callback may also *wait* for an op it started (PowerSGD's hook waits on an all_reduce's
future inside its ``then`` callback); on ringrt's thread that op can only run if the waiter
runs it, so the futures here are :class:`RingrtFuture`, whose ``wait()`` runs ringrt's queue
on that thread up to its ops (as ``ringrt.Work.wait`` does), and so do the futures its
``then`` returns.

Why a Python ``Work`` and not ``torch._C._distributed_c10d._create_work_from_future``: the
Work that makes ignores the future's error (its ``wait()`` returns True and its
``get_future()`` yields the exception as a value; torch 2.13), so a failed op would look
like a successful one.
"""

from __future__ import annotations

import threading

import torch.distributed as dist
from torch.futures import Future

from ringrt._deadline import seconds


class RingrtFuture(Future):
    """A ``torch.futures.Future`` of ringrt ops that may be waited on from ringrt's own
    executor thread (in a callback): ``wait()`` runs the queued ops there first."""

    def __init__(self, ringrt_works=()):
        super().__init__()
        self._ringrt_works = list(ringrt_works)

    def wait(self):
        _run_until_done(self._ringrt_works)
        return super().wait()

    def then(self, callback) -> RingrtFuture:
        chained = super().then(callback)
        mirror = RingrtFuture(self._ringrt_works)
        chained.add_done_callback(lambda done: _copy_outcome(done, mirror))
        return mirror


def _run_until_done(ringrt_works) -> None:
    for work in ringrt_works:                   # on ringrt's own thread too (callbacks)
        try:
            work.wait()
        except Exception:  # noqa: BLE001 - the future carries the error
            pass


def _copy_outcome(source: Future, target: Future) -> None:
    try:
        value = source.value()
    except Exception as exc:  # noqa: BLE001 - handed on
        target.set_exception(exc)
        return
    target.set_result(value)


class RingrtWork(dist.Work):
    """A torch ``Work`` over one or more ringrt ops (their ``ringrt.Work`` handles).

    ``wait()`` blocks until every op is done and raises the first error; ``get_future()``
    returns the ``torch.futures.Future`` that completes at the same moment.
    """

    def __init__(self, future: Future, ringrt_works=(), sender: list | None = None):
        super().__init__()
        self._future = future
        self._ringrt_works = list(ringrt_works)
        self._sender = sender                   # [group rank], filled in by recv

    def wait(self, timeout=None) -> bool:
        limit = seconds(timeout) or None            # torch passes timedelta(0) for "none"
        for work in self._ringrt_works:             # on ringrt's own thread too (callbacks)
            try:
                work.wait(limit)
            except Exception:  # noqa: BLE001 - the future carries the error, raised below
                if not work.is_completed():
                    raise                           # our timeout, not the op's error
        self._future.wait()
        return True

    def get_future(self) -> Future:
        return self._future

    def is_completed(self) -> bool:
        return self._future.done()

    def is_success(self) -> bool:
        return self._future.done() and self.exception() is None

    def exception(self):
        if not self._future.done():
            return None
        try:
            self._future.value()
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return exc
        return None

    def result(self):
        """The op's output tensors (waits first)."""
        self.wait()
        return self._future.value()

    def _source_rank(self) -> int:
        """The group rank a ``recv``/``recv_anysource`` received from (torch's name)."""
        self.wait()
        return self._sender[0]


def completed(value, sender: list | None = None) -> RingrtWork:
    """The Work of an op that already ran (inline)."""
    future = RingrtFuture()
    future.set_result(value)
    return RingrtWork(future, (), sender)


def pending(ringrt_works, value, after=None, sender: list | None = None) -> RingrtWork:
    """The Work of ops queued on ringrt's executor: its future completes when the last of
    ``ringrt_works`` is done, after ``after()`` (copying staged outputs back, ...), with
    ``value``, or with the first error."""
    works = list(ringrt_works)
    future = RingrtFuture(works)
    outstanding = [len(works)]
    guard = threading.Lock()

    def on_done(_work) -> None:
        with guard:
            outstanding[0] -= 1
            if outstanding[0]:
                return
        _complete(future, works, value, after)

    for work in works:
        work.add_done_callback(on_done)
    if not works:
        _complete(future, works, value, after)
    return RingrtWork(future, works, sender)


def _complete(future: Future, works, value, after) -> None:
    """Set the future (runs its callbacks here, with no ringrt lock held)."""
    error = next((w.exception() for w in works if w.exception() is not None), None)
    if error is None and after is not None:
        try:
            after()
        except Exception as exc:  # noqa: BLE001 - handed to the future
            error = exc
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
