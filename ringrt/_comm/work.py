"""Async ops: :class:`Work` handles and the executor that runs ops in call order.

One executor per process runs every op of every group strictly in the order the ops were
called. A blocking op runs inline on the caller's thread when nothing is queued (no thread
hand-off on the latency-critical path); otherwise it queues behind the async ops and waits.
Only the thread holding the executor's lock touches the inbox.

A finished op's :class:`Work` is completed, and its done-callbacks run, on the thread that ran
it *after* the lock is released and the op left the queue: a callback may start more ops, and
even block on them (torch futures run their ``then`` callbacks where the result is set; DDP
comm hooks such as PowerSGD chain collectives that way and wait on them), because another
thread then runs the queue, still one op at a time and in call order (:class:`Executor`).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from ringrt._deadline import Deadline, seconds


class Work:
    """Handle of an op started with ``async_op=True`` (like ``torch.distributed.Work``).

    An op runs on the executor (``executor``), or - a same-host receive - completes whenever
    a thread drives its ``progress`` engine (``shm_p2p.ShmPointToPoint``): ``wait`` drives
    until it is done, ``is_completed`` and ``exception`` drive once without blocking, and a
    done-callback asks the engine to drive in the background, since nobody may ever wait.
    """

    def __init__(self, description: str, executor: Executor | None = None,
                 progress: Callable[[], object] | None = None) -> None:
        self.description = description
        self._done = threading.Event()
        self._exception: BaseException | None = None
        self._result = None
        self._callbacks: list | None = []
        self._executor = executor
        self._progress = progress

    @classmethod
    def finished(cls, description: str, result=None) -> Work:
        """A Work whose op already finished with ``result`` (built without the event and
        callback list a pending one needs: ``isend`` returns one per call)."""
        work = cls.__new__(cls)
        work.description, work._done, work._exception = description, _FINISHED, None
        work._result, work._callbacks, work._executor, work._progress = result, None, None, None
        return work

    @classmethod
    def done(cls, description: str, result=None) -> Work:
        """Deprecated name of :meth:`finished` (a factory, not a predicate: ask
        :meth:`is_completed`). Kept because ``ringrt.Work`` is public."""
        import warnings
        warnings.warn("ringrt.Work.done() is deprecated: use Work.finished()",
                      DeprecationWarning, stacklevel=2)
        return cls.finished(description, result)

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
            self._executor.run_if_next(self)
        if self._progress is not None and not self._done.is_set():
            self._progress.wait_for(self, limit)       # returns once done or after limit
            limit = 0
        if not self._done.wait(limit):
            from ringrt.errors import TimeoutError

            raise TimeoutError(f"Work.wait for {self.description}", None, [], limit, None,
                               hint="The op is still running; wait again or check peers.")
        if self._exception is not None:
            raise self._exception
        return True

    def is_completed(self) -> bool:
        """True once the op finished, successfully or not."""
        if self._progress is not None and not self._done.is_set():
            self._progress.poll()
        return self._done.is_set()

    def is_success(self) -> bool:
        """True once the op finished without error."""
        return self.is_completed() and self._exception is None

    def exception(self) -> BaseException | None:
        """The op's error once it finished with one, else None."""
        return self._exception if self.is_completed() else None

    def result(self) -> Any:
        """What the op produced (for ops that return something, e.g. ``irecv``'s sender)."""
        self.wait()
        return self._result

    def add_done_callback(self, callback: Callable[[Work], object]) -> None:
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
        elif self._progress is not None:
            self._progress.in_background(self)

    def _finish(self, result=None, exception: BaseException | None = None) -> None:
        self._result, self._exception = result, exception
        with _CALLBACKS_LOCK:
            callbacks, self._callbacks = self._callbacks, None
        self._done.set()
        for callback in callbacks or ():
            _call(callback, self)


_CALLBACKS_LOCK = threading.Lock()      # guards Work._callbacks (held for a list append only)
_FINISHED = threading.Event()           # the event of every Work.finished (set, never cleared)
_FINISHED.set()


def _call(callback, work: Work) -> None:
    try:
        callback(work)
    except Exception:  # noqa: BLE001 - a callback's bug must not kill the executor thread
        import traceback

        traceback.print_exc()


class Executor:
    """Runs jobs (zero-argument callables) one at a time, in submission order.

    Jobs run on loop threads, one job at a time (the lock). A thread that finished a job
    completes its Work -- runs its done-callbacks -- after dequeuing it and releasing the
    lock; if more jobs are queued and no other thread is free to run them meanwhile, it first
    starts one. So a callback that blocks (on a later op, a ``Work.wait``, a torch future) never
    stalls the queue it waits on: some thread keeps running it, in order. Usually one thread
    runs everything; a second appears while callbacks run, and extra ones retire once idle.
    """

    MAX_THREADS = 32          # bounds a runaway of callbacks each blocking on the next op

    def __init__(self, name: str):
        self._name = name
        self._lock = threading.Lock()          # held while a job runs
        self._queue: collections.deque = collections.deque()
        self._wakeup = threading.Condition()   # guards the queue and the thread counts below
        self._threads: list[threading.Thread] = []
        self._idle = 0                         # threads waiting for a job
        self._running = 0                      # threads taking or running a job
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

    def claim(self) -> bool:
        """Take the right to run an op on this thread, now, as :meth:`run` would, and return
        True; False if a job is queued or running (then queue it). Give it back with
        :meth:`unclaim`. For an op run inline without a job object (a fast path)."""
        if self._queue or not self._lock.acquire(False):
            return False
        if self._queue:
            self._lock.release()
            return False
        return True

    def unclaim(self) -> None:
        self._lock.release()

    def submit(self, job, description: str) -> Work:
        """Queue ``job`` for the loop threads; returns its :class:`Work`."""
        work = Work(description, self)
        with self._wakeup:
            if self._closed:
                raise RuntimeError("the process group was destroyed")
            self._queue.append((job, work))
            self._ensure_a_runner()
            self._wakeup.notify()
        return work

    def run_if_next(self, work: Work) -> None:
        """Run ``work``'s job on this (waiting) thread if it is next in line and no job is
        running: no thread hand-off when an async op is waited for right away (torch's
        ``dist.recv`` is an ``irecv`` and a ``wait``). Call order is kept: only the head
        of the queue may run, under the same lock as the loop threads."""
        if not self._queue or self._queue[0][1] is not work or not self._lock.acquire(False):
            return
        finished = self._run_next(locked=True)
        if finished is not None:
            finished()

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
        """Stop the threads once the queue is empty (bounded)."""
        with self._wakeup:
            self._closed = True
            self._wakeup.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    def _ensure_a_runner(self) -> None:
        """With the condition held and jobs queued: start a thread unless one is idle or
        already on its way to the next job."""
        if self._idle or self._running or len(self._threads) >= self.MAX_THREADS:
            return
        thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads)}",
                                  daemon=True)
        self._threads.append(thread)
        self._running += 1                     # counted before it starts: no double start
        thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            finished = self._run_next()
            with self._wakeup:
                self._running -= 1
                if self._queue:
                    self._ensure_a_runner()     # someone runs the queue while we run callbacks
            if finished is not None:
                finished()
            with self._wakeup:
                if not self._wait_for_a_job():
                    self._threads.remove(me)
                    return
                self._running += 1

    def _wait_for_a_job(self) -> bool:
        """(Condition held.) Wait until a job is queued; False when this thread should end
        (the executor closed, or another thread already waits)."""
        if self._idle and not self._queue:
            return False                        # one idle thread is enough
        self._idle += 1
        while not self._queue and not self._closed:
            self._wakeup.wait()
        self._idle -= 1
        return bool(self._queue)

    def _run_next(self, locked: bool = False):
        """Run the job at the head of the queue (if any) and dequeue it; returns the call
        that completes its Work, to be made with the lock released (its callbacks may start
        new ops), or None when another thread took the job first. ``locked``: the caller
        already holds the lock (released here)."""
        result, error = None, None
        if not locked:
            self._lock.acquire()
        try:
            if not self._queue:
                return None
            job, work = self._queue[0]
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                error = exc
            finally:
                with self._wakeup:
                    self._queue.popleft()
                    self._wakeup.notify_all()
        finally:
            self._lock.release()
        return lambda: work._finish(result, error)
