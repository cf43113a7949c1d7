"""The observer of one world: what the process group calls for every op.

``entered`` (the op is called: user's source line, algorithm), ``started`` and ``finished``
keep the op's flight-recorder record; while tracing, ``finished`` also hands the record to the
timeline, with the seconds it spent waiting for peers (``waits.peer_wait`` across the op).
With tracing off, an op costs three short calls here (the trace_overhead benchmark measures
them; figures in docs/tracing.md); with it on, one tuple more.
"""

from __future__ import annotations

import time

from ringrt._observe import dump, timeline
from ringrt._observe.recorder import (
    DONE,
    ENDED,
    FAILED,
    RUNNING,
    SITE,
    STARTED,
    STATE,
    WAITED,
    FlightRecorder,
    describe,
    process_identity,
)
from ringrt._observe.site import call_site, short
from ringrt._observe.waits import WaitClock, peer_wait
from ringrt._settings import Settings

P2P_SEND, P2P_RECV = "send", "recv"
# Where call_site starts looking for the user's line, counted from call_site's own frame:
# the frames below are always ringrt's (checked by call_site: a wrong depth costs time only).
# call_site, entered, ProcessGroup.run and run's caller (a public collective):
OP_SITE_DEPTH = 4
# call_site, p2p, p2p.py's _recorded or _posted, and the public send / recv / irecv:
P2P_SITE_DEPTH = 4
_NO_ALGORITHM = ""


class Observer:
    """Flight recorder (always) and timeline (with ``RINGRT_TRACE``) of one world.

    Args:
        rank, world_size: this rank in the world.
        dtypes: dtype code -> NumPy dtype (or None), to describe records.
        trace_path: ``RINGRT_TRACE``'s file, or None.
        settings: the flight recorder's size and dump directory (default: read now).
    """

    def __init__(self, rank: int, world_size: int, dtypes: dict, trace_path: str | None = None,
                 settings: Settings | None = None):
        settings = Settings.read() if settings is None else settings
        self.rank, self.world_size = rank, world_size
        self._dtype_name = dtypes.get
        self.recorder = FlightRecorder(settings.flight_recorder)
        self.flight_dir = settings.flight_dir          # where dump.write puts this world's
        self.tracer = None
        if trace_path is not None:
            self.tracer = timeline.Tracer(trace_path, rank, world_size, dtypes)
            if timeline.active is None:
                timeline.active = self.tracer
        dump.register(self)

    # -- per op -----------------------------------------------------------------------------

    def entered(self, group: int, seq: int, spec) -> list:
        """Record op ``seq`` of ``group`` as called (its spec names the algorithm)."""
        return self.recorder.enter(group, seq, spec.name, spec.dtype_code, spec.count,
                                   spec.algorithm, call_site(OP_SITE_DEPTH))

    def started(self, record: list) -> None:
        record[STATE] = RUNNING
        record[WAITED] = -peer_wait.total
        record[STARTED] = time.perf_counter()

    def finished(self, record: list, failure: BaseException | None) -> None:
        record[ENDED] = time.perf_counter()
        record[WAITED] += peer_wait.total
        record[STATE] = DONE if failure is None else f"{FAILED}: {type(failure).__name__}"
        if self.tracer is not None:
            self.tracer.op(record)
        if failure is not None and _breaks_group(failure):
            dump.on_error(failure, record[SITE])

    def p2p(self, kind: str, group: int, peer, tag: int, dtype_code: int, count: int) -> list:
        """Record a point-to-point op as entered and started (``finished`` ends it)."""
        name = f"send to {peer}" if kind == P2P_SEND else \
            f"recv from {'any' if peer is None else peer}"
        record = self.recorder.enter(group, tag, name, dtype_code, count, _NO_ALGORITHM,
                                     call_site(P2P_SITE_DEPTH))
        self.started(record)
        return record

    # -- tracing helpers --------------------------------------------------------------------

    @property
    def wait_clock(self) -> WaitClock | None:
        """While tracing, the clock that the objects blocking on peers (mailbox, arena) add
        their waits to (``waits.peer_wait``); None when not tracing: nothing to time."""
        return None if self.tracer is None else peer_wait

    def flush_timeline(self) -> None:
        if self.tracer is not None:
            self.tracer.flush()

    def stats(self) -> dict:
        """``ringrt.stats()["observe"]``: the flight recorder's size and count, the timeline."""
        return {"flight_recorder_size": self.recorder.size,
                "ops_recorded": self.recorder.entered,
                "trace": None if self.tracer is None else self.tracer.file_path}

    # -- dumps --------------------------------------------------------------------------------

    def report(self, reason: str, where) -> dict:
        """This world's flight record, JSON-ready."""
        now = time.perf_counter()
        records = self.recorder.records()
        ops = [describe(r, now, self._dtype_name) for r in records]
        return {
            "rank": self.rank, "world_size": self.world_size, **process_identity(),
            "reason": reason, "wall_time": time.time(),
            "ops_recorded": self.recorder.entered, "ops": ops,
            "last_entered": ops[-1] if ops else None,
            "last_finished": next((op for op in reversed(ops) if op["state"] == "done"), None),
            "where": None if where is None else {"site": short(where), "file": where[0],
                                                 "line": where[1], "function": where[2]},
        }

    def close(self) -> None:
        dump.unregister(self)
        if self.tracer is not None:
            self.tracer.close()
            if timeline.active is self.tracer:
                timeline.active = None


def _breaks_group(error: BaseException) -> bool:
    from ringrt.errors import CollectiveMismatchError, PeerLostError, TimeoutError

    return isinstance(error, (CollectiveMismatchError, PeerLostError, TimeoutError))



def tracing_card(settings: Settings) -> int:
    """This rank's word on tracing in its address card: 0 off, 1 on, 2 on and ping rank 0
    for the clock offset even on one host (``RINGRT_TRACE_PING=1``, for tests)."""
    if settings.trace is None:
        return 0
    return 2 if settings.trace_ping == "1" else 1


def ranks_to_ping(cards: dict, hosts: dict) -> list[int]:
    """Ranks that measure their clock offset to rank 0 (the same list on every rank): those on
    other hosts than rank 0 when some rank traces; all when some rank asked for pings."""
    words = [card.get("trace", 0) for card in cards.values()]
    if not any(words):
        return []
    if 2 in words:
        return sorted(r for r in hosts if r != 0)
    return sorted(r for r, host in hosts.items() if host != hosts[0])


def launcher_merges_trace(settings: Settings) -> bool:
    """``ringrun --trace`` merges the rank files itself when the job ends."""
    return settings.trace_merge == "launcher"
