"""torch ``Work`` handles for ringrt ops, and the futures DDP waits on.

A blocking op (``opts.asyncOp`` False, which ``dist.all_reduce(t)`` passes) runs inline on
the caller's thread and returns a completed :class:`RingrtWork`. An async op
(``async_op=True``, and every op DDP's reducer starts) is queued on ringrt's executor; its
future completes on the thread that ran it once the data is there -- after ringrt released
its lock and dequeued the op, so a ``then`` callback may start more ops and even wait for
them (ringrt's executor then runs its queue on another thread) -- with the op's tensors as
its value, or with the op's error:

- ``work.wait()`` raises ringrt's own exception (``PeerLostError``,
  ``CollectiveMismatchError``, ``TimeoutError``, ...);
- the future (``work.get_future()``, which DDP's reducer waits on in C++, so
  ``loss.backward()``) fails with a ``RuntimeError`` quoting it.

A same-host receive (``recv``, ``recv_anysource``) and a coalesced batch (``batch_isend_irecv``)
return a :class:`DeferredWork` instead: ringrt completes such a receive on the thread that
waits for it, so ``wait()`` does the work without a thread hop; only ``get_future()`` makes
a future, and with it a background driver (a future must complete while nobody waits).

Why the future quotes rather than carries the exception: from Python, torch can only fail a
future through a ``then`` callback that raises. ``Future.set_exception`` stores the
exception as the future's *value* (only Python's ``wait()`` re-raises it), so C++ waiters --
DDP's reducer -- would take it for a result and crash parsing it (torch 2.13). For the same
reason ``torch._C._distributed_c10d._create_work_from_future`` is not used: its Work's
``wait()`` reports such a failed op as a success.
"""

from __future__ import annotations

import threading

import torch.distributed as dist
from torch.futures import Future

from ringrt._deadline import seconds


class RingrtWork(dist.Work):
    """A torch ``Work`` over one or more ringrt ops (their ``ringrt.Work`` handles).

    ``wait()`` blocks until every op is done and raises the first error as ringrt raised it;
    ``get_future()`` returns the ``torch.futures.Future`` that completes at the same moment.
    """

    def __init__(self, future: Future | None, ringrt_works=(), sender: list | None = None,
                 outcome: list | None = None, value=None):
        super().__init__()
        self._future = future                   # None: done, made on demand from ``value``
        self._value = value
        self._ringrt_works = ringrt_works
        self._sender = sender                   # [group rank], filled in by recv
        self._outcome = outcome if outcome is not None else _SUCCESS  # [error] once done

    def done_again(self, value) -> None:
        """Make this completed Work (of an op that ran inline, which nothing holds any more)
        the Work of another such op, whose future's value is ``value``."""
        self._future = None
        self._value = value

    def wait(self, timeout=None) -> bool:
        if self._future is None:                    # an op that ran inline
            return True
        _wait_for_ops(self._ringrt_works, timeout)
        try:
            self._future.wait()             # returns once the op's outcome is recorded
        except Exception:
            if self._outcome[0] is None:
                raise
        if self._outcome[0] is not None:
            raise self._outcome[0]          # ringrt's own exception, not the future's quote
        return True

    def get_future(self) -> Future:
        if self._future is None:
            self._future = Future()
            self._future.set_result(self._value)
        return self._future

    def is_completed(self) -> bool:
        return self._future is None or self._future.done()

    def is_success(self) -> bool:
        return self.is_completed() and self._outcome[0] is None

    def exception(self):
        return self._outcome[0] if self.is_completed() else None

    def result(self):
        """The op's output tensors (waits first)."""
        self.wait()
        return self.get_future().value()

    def _source_rank(self) -> int:
        """The group rank a ``recv``/``recv_anysource`` received from (torch's name)."""
        self.wait()
        return self._sender[0]


_SUCCESS = [None]            # the outcome of every op that ran inline (never written to)


def completed(value, sender: list | None = None) -> RingrtWork:
    """The Work of an op that already ran (inline); its future is made only if asked for."""
    return RingrtWork(None, (), sender, value=value)


class _Failed:
    """The base future's value when the op failed (turned into an error by ``_unwrap``)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


def _unwrap(base: Future):
    value = base.value()
    if isinstance(value, _Failed):
        raise value.error
    return value


def pending(ringrt_works, value, after=None, sender: list | None = None) -> RingrtWork:
    """The Work of ops queued on ringrt's executor: its future completes when the last of
    ``ringrt_works`` is done, after ``after()`` (copying staged outputs back, ...), with
    ``value``, or fails quoting the first error."""
    works = list(ringrt_works)
    base = Future()
    future = base.then(_unwrap)          # failing a then-callback fails the future in C++
    outcome: list = [None]
    _when_all_done(works, lambda: _complete(base, works, value, after, outcome))
    return RingrtWork(future, works, sender, outcome)


def _when_all_done(works: list, callback) -> None:
    """Call ``callback()`` once, on the thread that completes the last of ``works`` (at once
    when there are none)."""
    outstanding = [len(works)]
    guard = threading.Lock()

    def on_done(_work) -> None:
        with guard:
            outstanding[0] -= 1
            if outstanding[0]:
                return
        callback()

    for work in works:
        work.add_done_callback(on_done)
    if not works:
        callback()


def _complete(base: Future, works, value, after, outcome: list) -> None:
    """Set the base future (which runs the callbacks chained on the Work's future here, with
    no ringrt lock held)."""
    error = next((w.exception() for w in works if w.exception() is not None), None)
    if error is None and after is not None:
        try:
            after()
        except Exception as exc:  # noqa: BLE001 - handed to the future
            error = exc
    outcome[0] = error
    base.set_result(value if error is None else _Failed(error))


class DeferredWork(RingrtWork):
    """A torch ``Work`` over ringrt ops that complete when driven (``ringrt.p2p``'s
    same-host receives: see the module docstring), or over any ringrt ops.

    Args:
        ringrt_works: the ops' ``ringrt.Work`` handles.
        value: the future's value; ``value_of()`` computes it instead, when given.
        after: run once every op is done, before the outcome is final (its error fails the
            Work).
        sender: ``[group rank]`` a receive fills in (``_source_rank``).
    """

    def __init__(self, ringrt_works, value=None, after=None, sender: list | None = None,
                 value_of=None):
        super().__init__(None, list(ringrt_works), sender, [None], value)
        self._after = after
        self._value_of = value_of
        self._settled = False
        self._guard = threading.Lock()

    def wait(self, timeout=None) -> bool:
        _wait_for_ops(self._ringrt_works, timeout)
        self._settle()
        if self._outcome[0] is not None:
            raise self._outcome[0]
        return True

    def _settle(self) -> None:
        """Once every op is done: run ``after`` and record the outcome (once)."""
        with self._guard:
            if self._settled:
                return
            self._settled = True
            error = next((w.exception() for w in self._ringrt_works
                          if w.exception() is not None), None)
            if error is None and self._after is not None:
                try:
                    self._after()
                except Exception as exc:  # noqa: BLE001 - the Work's outcome
                    error = exc
            self._outcome[0] = error

    def get_future(self) -> Future:
        with self._guard:
            if self._future is not None:
                return self._future
            base = Future()
            self._future = base.then(_unwrap)
        value = self._value_of() if self._value_of is not None else self._value

        def settled() -> None:
            self._settle()
            error = self._outcome[0]
            base.set_result(value if error is None else _Failed(error))

        _when_all_done(list(self._ringrt_works), settled)
        return self._future

    def is_completed(self) -> bool:
        if self._future is not None:
            return self._future.done()
        if all(w.is_completed() for w in self._ringrt_works):
            self._settle()
            return True
        return False


def _wait_for_ops(ringrt_works, timeout) -> None:
    """Wait until every ringrt op is done; an op's own error is left for the caller to raise
    once all are done, a timeout of this wait is raised at once."""
    limit = seconds(timeout) or None                 # torch passes timedelta(0) for "none"
    for work in ringrt_works:
        try:
            work.wait(limit)
        except Exception:  # noqa: BLE001 - raised by the caller, once every op is done
            if not work.is_completed():
                raise                                # our timeout, not the op's error

