"""Hooks for measuring ringrt itself: what watching a job (flight recorder, timeline) costs,
and what each step of a small all_reduce costs.

``benchmarks/overhead/trace_overhead.py`` swaps the observer of a one-rank world between the
modes of :func:`observers` while it times ops, then times the observer's parts with
:func:`observer_part_costs`. Nothing here is needed to run a job, and nothing here changes
what an op computes. These live next to the code they measure so that a change to ringrt's
observer updates them here, where ``tests/unit/test_benchmark_api.py`` runs them, rather
than breaking the benchmark. ``benchmarks/overhead/latency_breakdown.py`` times each step
of a small shared-memory all_reduce alone with :func:`all_reduce_part_costs`, and the time
its ops spend waiting for the peers with :func:`all_reduce_wait` (both of the general path:
the fast path, :func:`use_fast_path`, declines while waits are timed).
``benchmarks/overhead/tail_floor.py`` times the fast path's C steps alone after a fixed run
of Python with :func:`steps_only_times`, to show how a small op's tail depends on its length.
"""

from __future__ import annotations

import timeit

from ringrt import collectives, distributed
from ringrt._latency_parts import all_reduce_part_costs, all_reduce_wait, steps_only_times
from ringrt._comm.wire import CODE_DTYPES
from ringrt._observe import site, timeline
from ringrt._observe.observer import Observer
from ringrt._observe.recorder import FlightRecorder
from ringrt._observe.waits import WaitClock

OBSERVER_MODES = ("none", "recorder", "tracing", "recorder off")


class _NoObserver:
    """The observer's interface doing nothing: an op with no flight record at all."""

    tracer = None

    def entered(self, *args):
        return None

    def started(self, record):
        pass

    def finished(self, record, failure):
        pass

    def close(self):
        pass


def use_fast_path(enabled: bool, group=None, native: bool = True) -> None:
    """Let ``group``'s small all_reduces take their fast path (the default) or not (every op
    through the general path, as ``RINGRT_NO_FAST_PATH=1`` does for a whole job), so a
    benchmark can time both in one job; with ``native=False`` the fast path runs its steps
    in Python even where the C module is built (as ``RINGRT_NO_NATIVE=1`` does for a whole
    job). The results are the same bits every way."""
    pg = distributed.resolve(group, "use_fast_path")
    pg.fast_paths.pop("all_reduce", None)        # made again on the next op
    if not enabled:
        pg.fast_paths["all_reduce"] = False
    elif not native:
        fast = collectives.fast_all_reduce(pg)
        if fast:
            fast.native = False


def observers(trace_path: str, group=None) -> dict[str, object]:
    """One observer for each of :data:`OBSERVER_MODES`, for :func:`use_observer`.

    ``none``: no observer (nothing recorded); ``recorder``: the world's own (the default:
    flight recorder on, timeline off); ``tracing``: flight recorder and timeline, the timeline
    written to ``trace_path``; ``recorder off``: as with ``RINGRT_FLIGHT_RECORDER=0``.

    Args:
        trace_path: the timeline file of the ``tracing`` observer.
        group: whose world (default: the default group).

    Returns:
        mode -> observer; hand it to :func:`close_observers` when done.
    """
    pg = distributed.resolve(group, "observers")
    traced = Observer(pg.global_rank, pg.world_size, CODE_DTYPES)
    traced.tracer = timeline.Tracer(trace_path, pg.global_rank, pg.world_size, CODE_DTYPES)
    recorder_off = Observer(pg.global_rank, pg.world_size, CODE_DTYPES)
    recorder_off.recorder = FlightRecorder(size=0)
    return {"none": _NoObserver(), "recorder": pg.observer, "tracing": traced,
            "recorder off": recorder_off}


def use_observer(observer: object, group=None) -> object:
    """Make ``observer`` (one of :func:`observers`) watch every later op of ``group``'s world
    (default: the default group).

    Returns:
        The observer it replaces.
    """
    pg = distributed.resolve(group, "use_observer")
    previous, pg.observer = pg.observer, observer
    return previous


def close_observers(made: dict[str, object]) -> None:
    """Close the observers :func:`observers` made (not the world's own, which its group
    closes); the ``tracing`` one writes the rest of its timeline."""
    for mode, observer in made.items():
        if mode != "recorder":
            observer.close()  # type: ignore[attr-defined]


def observer_part_costs(number: int, trace_path: str) -> dict[str, float]:
    """Microseconds per call of each part of the observer, by ``timeit`` over ``number`` calls.

    Parts: ``call_site`` (finding the user's source line), ``ring_record`` (one record into
    the flight recorder), ``observer_calls_per_op`` (a whole op's three observer calls),
    ``tracer_record_with_flush`` (one timeline record with its share of formatting and
    writing, to ``trace_path``), ``wait_timer_per_blocking_wait`` (the timer around each
    blocking receive while tracing, less an empty call) and ``empty_lambda_call`` (what an
    empty call costs, included in each of the others).
    """
    recorder = FlightRecorder()
    observer = Observer(0, 1, CODE_DTYPES)
    spec = type("Spec", (), {"name": "all_reduce", "dtype_code": 1, "count": 1,
                             "algorithm": "shm"})()

    def whole_op():
        record = observer.entered(0, 0, spec)
        observer.started(record)
        observer.finished(record, None)

    tracer = timeline.Tracer(trace_path, 0, 1, CODE_DTYPES)
    record = [0, 1, "all_reduce", 1, 1, "shm", ("train.py", 88, "main"), 0.0, 1.0, 2.0,
              "done", 0.5]
    clock, nothing = WaitClock(), lambda: None

    def timed_nothing():
        return clock.timed(nothing)
    seconds = {
        "call_site": timeit.timeit(lambda: site.call_site(1), number=number),
        "ring_record": timeit.timeit(
            lambda: recorder.enter(0, 1, "all_reduce", 1, 1, "shm", site.UNKNOWN),
            number=number),
        "observer_calls_per_op": timeit.timeit(whole_op, number=number),
        "tracer_record_with_flush": timeit.timeit(lambda: tracer.op(record), number=number),
        "wait_timer_per_blocking_wait": timeit.timeit(timed_nothing, number=number)
        - timeit.timeit(lambda: None, number=number),
        "empty_lambda_call": timeit.timeit(lambda: None, number=number),
    }
    tracer.close()
    observer.close()
    return {name: total / number * 1e6 for name, total in seconds.items()}


__all__ = ["OBSERVER_MODES", "observers", "use_observer", "close_observers",
           "observer_part_costs", "all_reduce_part_costs", "all_reduce_wait",
           "steps_only_times"]
