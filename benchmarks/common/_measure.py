"""One measured point: warm up, agree on an iteration count, time, take the slowest rank,
check the result against NumPy.

Only the collective itself runs between a barrier and the next: per-rank iteration times are
kept in a preallocated array and combined (max over ranks, through ringrt) after the timed
loop, and the correctness check runs afterwards on a fresh call with known inputs. Timed
buffers hold zeros, so repeated in-place sums neither overflow nor turn subnormal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import ringrt as dist
from benchmarks.common import _table


@dataclass(frozen=True)
class Budget:
    """How long to time one (system, op, size) point.

    ``seconds`` of timed iterations, at least ``min_iters`` and at most ``max_iters``, unless
    ``iters`` fixes the count; ``warmup`` fixes the warm-up (default: by size).
    """

    seconds: float = 0.25
    min_iters: int = 5
    max_iters: int = 2000
    iters: int | None = None
    warmup: int | None = None


def buffers(op: str, count: int, dtype: np.dtype, world: int):
    """(out, inp) for one op on a whole array of ``count`` elements (see _backends)."""
    chunk = count // world
    if op == "reduce_scatter":
        return np.zeros(chunk, dtype), np.zeros(count, dtype)
    if op == "all_gather":
        return np.zeros(count, dtype), np.zeros(chunk, dtype)
    return np.zeros(count, dtype), None


def _pattern(count: int, rank, dtype: np.dtype) -> np.ndarray:
    """Rank r's known input: small integers (exact sums in any dtype), different per rank."""
    return ((np.arange(count) % 13) + 1 + rank).astype(dtype)


def fill_known(op: str, out: np.ndarray, inp: np.ndarray | None, rank: int) -> None:
    """Known inputs for the checking call."""
    if op in ("reduce_scatter", "all_gather"):
        inp[...] = _pattern(inp.size, rank, inp.dtype)
        out[...] = -1
    elif op == "broadcast":
        out[...] = _pattern(out.size, rank, out.dtype) if rank == _table.BROADCAST_ROOT else -1
    else:
        out[...] = _pattern(out.size, rank, out.dtype)


def expected(op: str, out: np.ndarray, rank: int, world: int) -> np.ndarray:
    """What ``out`` must hold on ``rank`` after the checking call."""
    dtype, rank_sum = out.dtype, world * (world - 1) // 2
    if op == "all_reduce":
        return (world * _pattern(out.size, 0, np.int64) + rank_sum).astype(dtype)
    if op == "broadcast":
        return _pattern(out.size, _table.BROADCAST_ROOT, dtype)
    if op == "reduce_scatter":
        start = rank * out.size        # rank's block of every rank's (count,) input
        block = (np.arange(start, start + out.size) % 13) + 1
        return (world * block + rank_sum).astype(dtype)
    chunk = out.size // world
    return np.concatenate([_pattern(chunk, r, dtype) for r in range(world)])


def _max_over_ranks(values: np.ndarray) -> np.ndarray:
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def _sum_over_ranks(value: int) -> int:
    total = np.array([value], dtype=np.int64)
    dist.all_reduce(total)
    return int(total[0])


ROUND_WARMUP = 3          # untimed calls at the start of each round (at most the warm-up's)


def _timed(run, barrier, iters: int, warm: int = 0) -> np.ndarray:
    """Per-iteration times on this rank, barriers around the loop and nothing else in it
    but ``warm`` untimed calls first (the caches and the peers' spin after another system's
    turn: without them a round's first calls are its tail)."""
    times = np.empty(iters, dtype=np.float64)
    clock = time.perf_counter
    barrier()
    for _ in range(warm):
        run()
    for i in range(iters):
        start = clock()
        run()
        times[i] = clock() - start
    barrier()
    return times


# ringrt's shared-memory wait counters kept with each of its records (ringrt._comm.wakeups)
SHM_COUNTERS = ("waits", "sleeps", "timeouts", "missed_wakeups")


def shm_counters(names=SHM_COUNTERS, system=None) -> np.ndarray:
    """This rank's shared-memory wait counters ``names`` so far (zeros without shm): of the
    ringrt world ``system`` runs on (its ``shm_stats()``), else of ringrt's default group."""
    shm = (system.shm_stats() if system is not None else dist.stats().get("shm")) or {}
    return np.array([shm.get(name, 0) for name in names], dtype=np.int64)


class _Case:
    """One system's buffers, prepared call and pooled per-iteration times for one point
    (and, for a system on ringrt, its shared-memory wait counters over the timed loops)."""

    def __init__(self, system, op: str, count: int, dtype: np.dtype, world: int):
        self.system = system
        self.out, self.inp = buffers(op, count, dtype, world)
        self.run = system.prepare(op, self.out, self.inp)
        self.times: list[np.ndarray] = []
        self.iters_per_round = 0
        self.warm_per_round = 0
        self.counted = hasattr(system, "shm_stats")
        self.shm = np.zeros(len(SHM_COUNTERS), dtype=np.int64)

    def time_round(self) -> None:
        before = shm_counters(system=self.system) if self.counted else None
        self.times.append(_timed(self.run, self.system.barrier, self.iters_per_round,
                                 self.warm_per_round))
        if self.counted:
            self.shm += shm_counters(system=self.system) - before

    def shm_record(self) -> dict | None:
        """The counters summed over ranks (every rank calls this), ringrt only."""
        if not self.counted:
            return None
        total = self.shm.copy()
        dist.all_reduce(total)
        return dict(zip(SHM_COUNTERS, total.tolist()))


def measure(systems, op: str, nbytes: int, dtype: str, budget: Budget, run_id: str = "",
            rounds: int = 1) -> list[dict]:
    """Time ``op`` on every system for a whole array of about ``nbytes``; every rank calls it.

    Each system warms up, then the timed iterations are split into ``rounds`` that take
    turns (round r starts with system r mod n), so a burst of load from elsewhere on the
    machine lands on every system alike rather than on whichever was running. Each round
    starts with ``ROUND_WARMUP`` untimed calls (fewer if the warm-up is shorter).

    Returns:
        One record (:func:`benchmarks.common._table.record`) per system, identical on every rank.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    np_dtype = np.dtype(dtype)
    count = _table.element_count(op, nbytes, np_dtype.itemsize, world)
    warmup = budget.warmup if budget.warmup is not None else _table.warmup_iterations(nbytes)
    cases = [_Case(system, op, count, np_dtype, world) for system in systems]
    for case in cases:
        case.iters_per_round = -(-_iterations(case, warmup, budget) // rounds)
        case.warm_per_round = min(warmup, ROUND_WARMUP)
    for r in range(rounds):
        for case in cases[r % len(cases):] + cases[:r % len(cases)]:
            case.time_round()
    records = []
    for case in cases:
        times = _max_over_ranks(np.concatenate(case.times))
        records.append(_table.record(
            system=case.system.name, op=op, world=world, nbytes=count * np_dtype.itemsize,
            count=count, dtype=dtype, seconds=times.tolist(), warmup=warmup,
            wrong=_check(case, op, rank, world), run=run_id, shm=case.shm_record()))
    return records


def _iterations(case: _Case, warmup: int, budget: Budget) -> int:
    """Warm up (at least one call: it also calibrates), then the timed iterations every rank
    will run: those that fill the budget at the slowest rank's warm-up pace."""
    warm = _timed(case.run, case.system.barrier, max(1, warmup))
    if budget.iters is not None:
        return budget.iters
    per_op = float(_max_over_ranks(np.array([np.median(warm)]))[0])
    return _table.iterations(per_op, budget.seconds, budget.min_iters, budget.max_iters)


def _check(case: _Case, op: str, rank: int, world: int) -> int:
    """One more call on known inputs; wrong elements summed over ranks."""
    fill_known(op, case.out, case.inp, rank)
    case.run()
    return _sum_over_ranks(int(np.count_nonzero(case.out != expected(op, case.out, rank,
                                                                       world))))
