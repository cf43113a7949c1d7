"""Rank-side functions of tests/dist/test_small_all_reduce.py: the small all_reduce's fast
path against the general path, on the same ranks."""

from __future__ import annotations

import numpy as np

import ringrt as dist
from ringrt import collectives
from ringrt._algorithms.small_all_reduce import SmallAllReduce
from ringrt._dtypes import BFLOAT16, narrow
from ringrt.distributed import resolve
from tests.dist.cases import ALL_DTYPES

SIZES = (0, 1, 7, 1023, 4096)
OPS = ("SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR")


def _fits(dtype: np.dtype, op: str) -> bool:
    if op == "AVG":
        return np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating)
    if op in ("BAND", "BOR", "BXOR"):
        return dtype == np.bool_ or np.issubdtype(dtype, np.integer)
    if op in ("MIN", "MAX"):
        return not np.issubdtype(dtype, np.complexfloating)
    return True


# floating values where the C module's arithmetic could part from NumPy's: infinities, NaN
# (one payload: which operand's payload a NaN sum keeps is the instruction's choice), signed
# zeros, subnormals, values whose sum or product overflows or loses bits
FLOAT_EXTREMES = (np.inf, -np.inf, np.nan, -0.0, 0.0, 1e-310, -1e-310, 1.5e38, -1.5e38,
                  3.0e300, 1e-45, 0.1, 1 / 3, -2.5, 7.0)


def make_input(rank: int, dtype: str, size: int, salt: int, extreme: bool = False
               ) -> np.ndarray:
    """Small positive values (no overflow in a product of two), 2-D when the size allows; or,
    if ``extreme``, values over the dtype's whole range (integers that wrap when summed or
    multiplied, negative ones; floating :data:`FLOAT_EXTREMES`), drawn per rank."""
    if extreme and dtype not in ("bool", "bfloat16"):
        rng = np.random.default_rng([rank, salt])
        kind = np.dtype(dtype)
        if np.issubdtype(kind, np.integer):
            info = np.iinfo(kind)
            x = rng.integers(info.min, info.max, size, dtype=kind, endpoint=True)
        elif np.issubdtype(kind, np.complexfloating):
            x = np.empty(size, kind)
            with np.errstate(over="ignore"):
                x.real, x.imag = (rng.choice(FLOAT_EXTREMES, size) for _ in range(2))
        else:
            with np.errstate(over="ignore"):
                x = rng.choice(FLOAT_EXTREMES, size).astype(kind)
        return x.reshape((size // 2, 2)) if size % 2 == 0 and size else x
    values = (np.arange(size) * (rank + 3) + salt * 7 + rank) % 5 + 1
    if dtype == "bool":
        x = values % 2 == 1
    elif dtype == "bfloat16":
        x = np.empty(size, BFLOAT16)
        narrow(values.astype(np.float32), x)
    else:
        x = values.astype(dtype)
    return x.reshape((size // 2, 2)) if size % 2 == 0 and size else x


def cases():
    salt = 0
    for dtype in [*ALL_DTYPES, "bfloat16"]:
        for op in OPS:
            for size in SIZES:
                salt += 1
                yield dtype, op, size, salt


def _counted(fast: SmallAllReduce) -> list:
    """Count the ops the fast path ran (its run returned True)."""
    taken = [0]
    run = fast.run

    def counting(array, op):
        done = run(array, op)
        taken[0] += done
        return done

    fast.run = counting
    return taken


def fast_vs_general(rank: int, world: int, general_ranks=(), extreme: bool = False):
    """Every case twice: through the fast path and through the general path (the group's
    fast path switched off), same inputs (``make_input(..., extreme)``). On ``general_ranks``
    the fast path stays off throughout, so those ranks' general path meets the others' fast
    path. Returns the results, how many cases ran on the fast path and how many of those
    the C module ran (``ringrt._native``; none with RINGRT_NO_NATIVE=1)."""
    dist.init_process_group()
    group = resolve(None)
    results, fast_ops, in_c, cases_run = {}, 0, 0, 0
    for dtype, op, size, salt in cases():
        x = make_input(rank, dtype, size, salt, extreme)
        if not _fits(np.dtype(np.float32) if dtype == "bfloat16" else x.dtype, op):
            continue
        cases_run += 1
        for path in ("fast", "general"):
            group.fast_paths.pop("all_reduce", None)
            if path == "general" or rank in general_ranks:
                group.fast_paths["all_reduce"] = False
            else:
                group.fast_paths["all_reduce"] = collectives.fast_all_reduce(group)
                taken = _counted(group.fast_paths["all_reduce"])
            y = x.copy()
            dist.all_reduce(y, op=dist.ReduceOp[op])
            if path == "fast" and rank not in general_ranks:
                fast_ops += taken[0]
                fast = group.fast_paths["all_reduce"]
                in_c += taken[0] and fast._kind(x.dtype, dist.ReduceOp[op])[5] is not None
            key = f"{dtype}/{op}/{size}/{path}"
            results[key] = y.view(np.uint16) if dtype == "bfloat16" else y
    dist.destroy_process_group()
    return {**results, "fast_ops": fast_ops, "in_c": in_c, "cases": cases_run}


def async_then_sync(rank: int, world: int):
    """An async all_reduce still queued when a blocking one is called: the blocking one must
    not run ahead of it (the fast path declines while the executor has work)."""
    dist.init_process_group()
    outs = []
    for i in range(30):
        first = np.full(5, float(rank + i), np.float64)
        second = np.full(5, float(10 * (rank + 1) + i), np.float64)
        work = dist.all_reduce(first, async_op=True)
        dist.all_reduce(second)
        work.wait()
        outs.append(np.concatenate([first, second]))
    dist.destroy_process_group()
    return {"outs": np.stack(outs)}


def recorded(rank: int, world: int):
    """The flight recorder's record and the counters of fast-path ops."""
    dist.init_process_group()
    group = resolve(None)
    x = np.ones(3, np.float32)
    for _ in range(4):
        dist.all_reduce(x)  # the call site the record must name
    taken = group.fast_paths["all_reduce"]
    records = group.observer.recorder.records()
    last = records[-1]
    stats = dist.stats()
    dist.destroy_process_group()
    return {"site_line": last[6][1], "site_file": last[6][0], "name": last[2],
            "state": last[10], "algorithm": last[5], "fast": isinstance(taken, SmallAllReduce),
            "calls": stats["ops"]["all_reduce"]["calls"],
            "bytes": stats["ops"]["all_reduce"]["bytes"],
            "shm": stats["algorithms"].get("all_reduce/shm", 0), "x": x}


def steps_only(rank: int, world: int):
    """debug.steps_only_times between real ops: its times, and that the ops around it (and
    the C steps' own sums, which stay 0) still give the right results."""
    from ringrt import debug

    dist.init_process_group()
    before = np.full(3, rank + 1, np.float32)
    dist.all_reduce(before)
    times = debug.steps_only_times(50, 500)
    after = np.full(5, rank + 1.0, np.float64)
    dist.all_reduce(after)
    debug.use_fast_path(True, native=False)
    try:
        debug.steps_only_times(1)
        refused = ""
    except ValueError as error:
        refused = str(error)
    debug.use_fast_path(True)
    dist.all_reduce(before)
    dist.destroy_process_group()
    return {"times": times, "before": before, "after": after, "refused": refused}
