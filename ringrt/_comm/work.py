"""Async ops: :class:`Work` handles and the executor that runs ops in call order.

One executor per process runs every op of every group strictly in the order the ops were
called. A blocking op runs inline on the caller's thread when nothing is queued (no thread
hand-off on the latency-critical path); otherwise it queues behind the async ops and waits.
Only the thread holding the executor's lock touches the inbox.

A finished op's :class:`Work` is completed, and its done-callbacks run, on the executor thread
*after* the lock is released and the op left the queue: a callback may start more ops (torch
futures run their ``then`` callbacks where the result is set, and DDP comm hooks chain
collectives that way). A callback that blocks on an op queued behind it -- a blocking
collective, or ``Work.wait`` -- gets the queue run on its own thread, in call order, instead of
waiting for itself.
"""

from __future__ import annotations

import collections
import threading

from ringrt._deadline import Deadline, seconds


class Work:
    """Handle of an op started with ``async_op=True`` (like ``torch.distributed.Work``)."""

    def __init__(self, description: str, executor: Executor | None = None):
        self.description = description
        self._done = threading.Event()
        self._exception: BaseException | None = None
        self._result = None
        self._executor = executor
        self._callbacks: list | None = []

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the op finished; re-raise its error, if any.

        Args:
            timeout: seconds (or timedelta) to wait at most; None waits as long as the op's
                own timeout allows (the op always ends by then).

        Returns:
            True, as torch does.

        Raises:
            ringrt.errors.TimeoutError: the op was still running after ``timeout``.
            DistError, ValueError, ...: whatever the op raised.
        """
        limit = seconds(timeout)
        if self._executor is not None and not self._done.is_set():
            self._executor.run_queue_if_on_its_thread(self)
        if not self._done.wait(limit):
            from ringrt.errors import TimeoutError

            raise TimeoutError(f"Work.wait for {self.description}", None, [], limit, None,
                               hint="The op is still running; wait again or check peers.")
        if self._exception is not None:
            raise self._exception
        return True

    def is_completed(self) -> bool:
        """True once the op finished, successfully or not."""
        return self._done.is_set()

    def is_success(self) -> bool:
        """True once the op finished without error."""
        return self._done.is_set() and self._exception is None

    def exception(self) -> BaseException | None:
        """The op's error once it finished with one, else None."""
        return self._exception if self._done.is_set() else None

    def result(self):
        """What the op produced (for ops that return something, e.g. ``irecv``'s sender)."""
        self.wait()
        return self._result

    def add_done_callback(self, callback) -> None:
        """Call ``callback(work)`` once the op finished (now, if it already has).

        It runs on the thread that finishes the op (the executor's), with no ringrt lock held,
        so it may start other ops. It must not raise: an exception is reported to stderr.
        """
        with _CALLBACKS_LOCK:
            pending = self._callbacks is not None
            if pending:
                self._callbacks.append(callback)
        if not pending:
            _call(callback, self)

    def _finish(self, result=None, exception: BaseException | None = None) -> None:
        self._result, self._exception = result, exception
        with _CALLBACKS_LOCK:
            callbacks, self._callbacks = self._callbacks, None
        self._done.set()
        for callback in callbacks or ():
            _call(callback, self)


_CALLBACKS_LOCK = threading.Lock()      # guards Work._callbacks (held for a list append only)


def _call(callback, work: Work) -> None:
    try:
        callback(work)
    except Exception:  # noqa: BLE001 - a callback's bug must not kill the executor thread
        import traceback

        traceback.print_exc()


class Executor:
    """Runs jobs (zero-argument callables) one at a time, in submission order."""

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()          # held while a job runs
        self._queue: collections.deque = collections.deque()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def run(self, job, description: str):
        """Run ``job`` now on this thread if nothing is queued, else after the queue."""
        if self._queue and threading.current_thread() is self._thread:
            self._run_queue_until(None)          # a done-callback blocking on a new op
        if not self._queue:
            with self._lock:
                if not self._queue:
                    return job()
        work = self.submit(job, description)
        work.wait()
        return work._result

    def run_queue_if_on_its_thread(self, work: Work) -> None:
        """Called by ``work.wait()``: on the executor thread itself (in a done-callback),
        run the queue up to ``work`` here rather than wait for this thread to do it."""
        if threading.current_thread() is self._thread:
            self._run_queue_until(work)

    def _run_queue_until(self, work: Work | None) -> None:
        while self._queue and (work is None or not work.is_completed()):
            self._run_next()

    def submit(self, job, description: str) -> Work:
        """Queue ``job`` for the executor thread; returns its :class:`Work`."""
        work = Work(description, self)
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the process group was destroyed")
            self._queue.append((job, work))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._wakeup.notify()
        return work

    def drain(self, timeout: float | None) -> bool:
        """Wait until every queued job ran; returns False if ``timeout`` passed first."""
        deadline = Deadline(timeout)
        while self._queue:
            with self._wakeup:
                self._wakeup.wait(deadline.remaining_ms(50) / 1000)
            if deadline.expired():
                return not self._queue
        with self._lock:      # the last job may still be running
            return True

    def close(self) -> None:
        """Stop the thread once the queue is empty (bounded)."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._closed:
                    self._wakeup.wait()
                if not self._queue:
                    return
            self._run_next()

    def _run_next(self) -> None:
        """Run the job at the head of the queue, dequeue it, then complete its Work with the
        lock released (its callbacks may start new ops)."""
        result, error = None, None
        with self._lock:
            job, work = self._queue[0]
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                error = exc
            finally:
                with self._wakeup:
                    self._queue.popleft()
                    self._wakeup.notify_all()
        work._finish(result, error)
