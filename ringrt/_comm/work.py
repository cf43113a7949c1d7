"""Async ops: :class:`Work` handles and the executor that runs ops in call order.

One executor per process runs every op of every group strictly in the order the ops were
called. A blocking op runs inline on the caller's thread when nothing is queued (no thread
hand-off on the latency-critical path); otherwise it queues behind the async ops and waits.
Only the thread holding the executor's lock touches the inbox.
"""

from __future__ import annotations

import collections
import threading

from ringrt._deadline import Deadline, seconds


class Work:
    """Handle of an op started with ``async_op=True`` (like ``torch.distributed.Work``)."""

    def __init__(self, description: str):
        self.description = description
        self._done = threading.Event()
        self._exception: BaseException | None = None
        self._result = None

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

    def _finish(self, result=None, exception: BaseException | None = None) -> None:
        self._result, self._exception = result, exception
        self._done.set()


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
        if not self._queue:
            with self._lock:
                if not self._queue:
                    return job()
        work = self.submit(job, description)
        work.wait()
        return work._result

    def submit(self, job, description: str) -> Work:
        """Queue ``job`` for the executor thread; returns its :class:`Work`."""
        work = Work(description)
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
            with self._lock:
                job, work = self._queue[0]
                try:
                    work._finish(job())
                except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                    work._finish(exception=exc)
                finally:
                    with self._wakeup:
                        self._queue.popleft()
                        self._wakeup.notify_all()
