"""How this rank's shared-memory waits went, per op kind (``ringrt.stats()["shm"]``).

Every wait on a peer's futex word (a collective's ticket or release word, a point-to-point
doorbell) first spins, then sleeps on the futex in slices. Per op kind (``all_reduce``,
``broadcast``, ..., ``p2p``) this counts:

- ``waits``: waits that found a peer not there yet (the others cost nothing to count);
- ``spins``: those that ended while spinning, and ``spin_seconds`` spent spinning in all;
- ``sleeps``: futex sleeps, and ``slept_seconds`` spent in them;
- how each sleep ended, from the syscall's return value and errno: ``wakeups`` (woken by a
  peer's FUTEX_WAKE), ``changed`` (EAGAIN: the word changed between our read and the call),
  ``timeouts`` (ETIMEDOUT: the slice ran out), ``interrupted`` (EINTR, a signal);
- ``missed_wakeups``: timeouts that a wake should have ended: the word slept on had changed,
  and the wake announcing its new value had *completed* before the kernel could time the
  sleep out. Exact, not a guess: next to each futex word the signaller keeps a
  *wake record* (:func:`stamp`), the value it announced and when its FUTEX_WAKE returned
  (CLOCK_MONOTONIC, one clock for every process on Linux). The new value was stored after
  the kernel queued us (else the call returns EAGAIN), so a wake of it that returned before
  our sleep's start plus its timeout ran while we were queued and should have woken us: a
  lost wake for certain. A correct protocol never loses one (the signaller stores, then
  wakes). A peer preempted between its store and its wake, or one that simply signalled
  after the slice ran out, has no record of that value from before the slice's end: a
  plain timeout, however the scheduler delayed anyone;
- ``overslept``: timeouts after which what we waited for had happened although the word
  slept on was unchanged (progress signalled on another word: sleeping on the wrong word);
- ``moves``: waits of the small all_reduce's C steps that found the late peer waiting for
  this rank's CPU and moved this rank to another (``ringrt/_native/_fastpath.c``).

Only waits that find a peer missing touch the counters (a list increment each), nothing on
the fast path. A signal costs one clock read and one store more (its wake record).
"""

from __future__ import annotations

import time

from ringrt._comm import futex

FIELDS = ("waits", "spins", "spin_seconds", "sleeps", "slept_seconds", "wakeups", "changed",
          "timeouts", "interrupted", "missed_wakeups", "overslept", "moves")
(WAITS, SPINS, SPIN_SECONDS, SLEEPS, SLEPT_SECONDS, WAKEUPS, CHANGED, TIMEOUTS, INTERRUPTED,
 MISSED_WAKEUPS, OVERSLEPT, MOVES) = range(len(FIELDS))
_BY_OUTCOME = {futex.WOKEN: WAKEUPS, futex.CHANGED: CHANGED, futex.TIMED_OUT: TIMEOUTS,
               futex.INTERRUPTED: INTERRUPTED}


# A wake record (one uint64 next to its futex word, stored in one piece after the FUTEX_WAKE
# returned): the value announced in the low 32 bits, the time in the high 32, in units of
# 2**WAKE_TIME_SHIFT ns of time.perf_counter_ns() (CLOCK_MONOTONIC on Linux: see
# tests/unit/test_wakeups.py), which wraps after 73 minutes. The value ties the time to one
# signal: a record of an earlier value says nothing about the change we found.
WAKE_TIME_SHIFT = 10
_WORD = 0xFFFFFFFF
_HALF_WORD = 0x80000000


def stamp(value: int) -> int:
    """The wake record of a signal of ``value`` whose wake returned just now.

    The signallers (``shm.ShmArena.signal``, ``signal_release``, ``shm_p2p``'s doorbell)
    inline this expression: no call on their hot path."""
    return time.perf_counter_ns() >> WAKE_TIME_SHIFT << 32 | value


def woke_before(record: int, value: int, deadline_ns: int) -> bool:
    """Whether ``record`` says a wake announcing ``value`` returned before ``deadline_ns``
    (a ``perf_counter_ns`` time), certainly: a record time rounds down, so it must be a whole
    unit early."""
    if record & _WORD != value:
        return False
    early = ((deadline_ns >> WAKE_TIME_SHIFT) - (record >> 32)) & _WORD
    return 0 < early < _HALF_WORD


def new_entry() -> list:
    """One op kind's counters, indexed by the constants above."""
    return [0, 0, 0.0, 0, 0.0, 0, 0, 0, 0, 0, 0, 0]


class WaitTally:
    """Counters per op kind; :meth:`of` hands out the list a wait adds to."""

    def __init__(self):
        self._kinds: dict[str, list] = {}

    def of(self, kind: str) -> list:
        entry = self._kinds.get(kind)
        if entry is None:
            entry = self._kinds[kind] = new_entry()
        return entry

    def snapshot(self) -> dict:
        """Totals under each field name, plus ``by_op``: the same per op kind (JSON-ready)."""
        by_op = {kind: dict(zip(FIELDS, entry)) for kind, entry in sorted(self._kinds.items())
                 if entry[WAITS] or entry[SLEEPS]}
        totals = {name: sum(entry[i] for entry in self._kinds.values())
                  for i, name in enumerate(FIELDS)}
        return {**totals, "by_op": by_op}


def spun(entry: list, seconds: float, satisfied: bool) -> None:
    """A wait spun ``seconds``; ``satisfied``: it ended there, without sleeping."""
    entry[SPIN_SECONDS] += seconds
    entry[SPINS] += satisfied


def sleep(entry: list, word, woken, address: int, seen: int, timeout_s: float,
          ready=None) -> int:
    """Sleep on the futex ``word`` (at ``address``; its wake record ``woken``) while it holds
    ``seen``, at most ``timeout_s``, and count how it ended (see the module docstring);
    returns the outcome.

    ``ready()``, if given, says whether what the caller waits for has happened; it is asked
    only after a timeout with the word unchanged (``overslept``)."""
    entry[SLEEPS] += 1
    start = time.perf_counter_ns()          # before the call: the kernel's timer starts later
    outcome = futex.wait(address, seen, timeout_s)
    entry[SLEPT_SECONDS] += (time.perf_counter_ns() - start) * 1e-9
    entry[_BY_OUTCOME[outcome]] += 1
    if outcome == futex.TIMED_OUT:
        now = word.value
        if now != seen:
            # without futexes there is no wake to lose (the poll sees the change next time)
            entry[MISSED_WAKEUPS] += futex.AVAILABLE and \
                woke_before(woken.value, now, start + futex.timeout_ns(timeout_s))
        elif ready is not None and ready():
            entry[OVERSLEPT] += 1
    return outcome
