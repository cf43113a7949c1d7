"""A pipe that ends a background thread's poll at once, so the thread can poll for long.

Each rank's heartbeat thread (``sentinel``) and ZAP handler (``auth.Guard``) are Python
threads: every time one wakes it needs the GIL, which it takes from the thread running
the user's ops, and on a machine whose cores are all busy with ranks it preempts one of
them. Polling in short slices only to notice ``stop()`` or queued work made them wake many
times a second for nothing; with a wake pipe in the poller they sleep until there is
something to do (a message, a deadline, or a ring from another thread).
"""

from __future__ import annotations

import os
import threading


class WakePipe:
    """``fd`` goes into the thread's poller; any thread may :meth:`ring`; the polling thread
    :meth:`drain`\\ s it when it is readable."""

    def __init__(self):
        self.fd, self._write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()          # a ring never writes to a closed fd's number
        self._closed = False

    def ring(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._write_fd, b"\0")
            except BlockingIOError:
                pass                           # full: the poller has wakes pending anyway

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._write_fd)
            os.close(self.fd)
