"""Linux futexes on shared memory: block until a 32-bit word changes, wake its waiters.

Used by the same-host shared-memory path (``shm.py``) so a waiting rank sleeps in the kernel
instead of spinning (four ranks share two cores here). Where futexes are not available (not
Linux x86-64/aarch64: macOS, the BSDs) or ``RINGRT_NO_FUTEX=1`` turns them off, :func:`wait`
polls the word instead, sleeping a little longer after each look (from ``POLL_FIRST_S`` up to
``POLL_MAX_S``), and :func:`wake` has nothing to do: a change is seen at the next look.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys
import time

from ringrt._settings import read_setting

# futex(2)'s syscall number on Linux; None elsewhere (an Intel Mac is also "x86_64", and its
# syscall 202 is something else entirely)
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}.get(platform.machine()) \
    if sys.platform.startswith("linux") else None
_FUTEX_WAIT, _FUTEX_WAKE = 0, 1          # shared (not PRIVATE): the word is in an mmap


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


try:
    _syscall = ctypes.CDLL(None, use_errno=True).syscall
    _syscall.restype = ctypes.c_long
except (OSError, AttributeError):       # pragma: no cover - non-glibc platforms
    _syscall = None

AVAILABLE = _syscall is not None and _SYS_FUTEX is not None and \
    not read_setting("RINGRT_NO_FUTEX")
POLL_FIRST_S, POLL_MAX_S = 10e-6, 1e-3     # polling: first nap, longest nap

# How a wait ended (what the syscall returned): woken by a FUTEX_WAKE (or spuriously), the
# word no longer held ``expected`` when the kernel looked (EAGAIN: it changed between our
# read and the call), the timeout ran out (ETIMEDOUT), or a signal interrupted it (EINTR).
WOKEN, CHANGED, TIMED_OUT, INTERRUPTED = 0, 1, 2, 3
_OUTCOMES = {errno.EAGAIN: CHANGED, errno.ETIMEDOUT: TIMED_OUT, errno.EINTR: INTERRUPTED}


def wait(address: int, expected: int, timeout_s: float) -> int:
    """Sleep until the word at ``address`` may differ from ``expected`` (or the timeout);
    returns how the sleep ended: WOKEN, CHANGED, TIMED_OUT or INTERRUPTED.

    Without futexes it polls (see the module docstring): CHANGED once the word differs,
    TIMED_OUT if it never did."""
    if not AVAILABLE:
        return _poll(address, expected, timeout_s)
    spec = _Timespec(*divmod(timeout_ns(timeout_s), 1_000_000_000))
    if _syscall(_SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAIT, ctypes.c_long(expected),
                ctypes.byref(spec), None, 0) == 0:
        return WOKEN
    return _OUTCOMES.get(ctypes.get_errno(), INTERRUPTED)


def timeout_ns(timeout_s: float) -> int:
    """The timeout :func:`wait` gives the kernel, in whole nanoseconds (rounded down)."""
    return int(timeout_s) * 1_000_000_000 + int(timeout_s % 1.0 * 1e9)


def wake(address: int) -> None:
    """Wake every process sleeping on the word at ``address``."""
    if AVAILABLE:
        _syscall(_SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAKE, ctypes.c_long(2**31 - 1),
                 None, None, 0)


def _poll(address: int, expected: int, timeout_s: float) -> int:
    """:func:`wait` without futexes: look at the word, nap, look again, napping longer each
    time (a peer that arrives soon is seen soon; a long wait costs few wake-ups)."""
    word = ctypes.c_uint32.from_address(address)
    deadline = time.perf_counter() + timeout_s
    nap = POLL_FIRST_S
    while word.value == expected:
        left = deadline - time.perf_counter()
        if left <= 0:
            return TIMED_OUT
        time.sleep(min(nap, left))
        nap = min(2 * nap, POLL_MAX_S)
    return CHANGED
