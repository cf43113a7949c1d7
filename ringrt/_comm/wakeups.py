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
- ``missed_wakeups``: timeouts after which the word slept on no longer held the value we
  slept on, read within ``ON_TIME_S`` of the slice's end: the peer had signalled by then,
  yet no wake reached us, so we slept the whole slice for nothing. A correct protocol never
  loses a wake (the signaller stores, then wakes). A timeout we only got to look at later
  (descheduled past the slice's end: common with more ranks than cores) may have seen a
  peer that signalled after the slice ran out, which is not a lost wake: it counts as a
  plain timeout;
- ``overslept``: timeouts after which what we waited for had happened although the word
  slept on was unchanged (progress signalled on another word: sleeping on the wrong word).

Only waits that find a peer missing touch the counters (a list increment each), nothing on
the fast path.
"""

from __future__ import annotations

import time

from ringrt._comm import futex

FIELDS = ("waits", "spins", "spin_seconds", "sleeps", "slept_seconds", "wakeups", "changed",
          "timeouts", "interrupted", "missed_wakeups", "overslept")
(WAITS, SPINS, SPIN_SECONDS, SLEEPS, SLEPT_SECONDS, WAKEUPS, CHANGED, TIMEOUTS, INTERRUPTED,
 MISSED_WAKEUPS, OVERSLEPT) = range(len(FIELDS))
_BY_OUTCOME = {futex.WOKEN: WAKEUPS, futex.CHANGED: CHANGED, futex.TIMED_OUT: TIMEOUTS,
               futex.INTERRUPTED: INTERRUPTED}


# A timed-out sleep whose word we read later than this after the slice's end may have seen a
# signal sent after the end (a late peer, not a lost wake). It covers the kernel's timer slack
# plus waking a process on an idle core. Shorter: fewer late peers taken for lost wakes.
ON_TIME_S = 0.0003


def new_entry() -> list:
    """One op kind's counters, indexed by the constants above."""
    return [0, 0, 0.0, 0, 0.0, 0, 0, 0, 0, 0, 0]


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


def sleep(entry: list, word, address: int, seen: int, timeout_s: float, ready=None) -> int:
    """Sleep on the futex ``word`` (at ``address``) while it holds ``seen``, at most
    ``timeout_s``, and count how it ended (see the module docstring); returns the outcome.

    ``ready()``, if given, says whether what the caller waits for has happened; it is asked
    only after a timeout with the word unchanged (``overslept``)."""
    entry[SLEEPS] += 1
    start = time.perf_counter()
    outcome = futex.wait(address, seen, timeout_s)
    changed = word.value != seen                 # read first: see ON_TIME_S
    slept = time.perf_counter() - start
    entry[SLEPT_SECONDS] += slept
    entry[_BY_OUTCOME[outcome]] += 1
    if outcome == futex.TIMED_OUT:
        if changed:
            entry[MISSED_WAKEUPS] += slept <= timeout_s + ON_TIME_S
        elif ready is not None and ready():
            entry[OVERSLEPT] += 1
    return outcome
