"""The small all_reduce's fast path (ringrt/_algorithms/small_all_reduce.py) against the
general path and NumPy: the same bits for every dtype, reduction and small size, ranks on
either path meeting each other, call order kept behind async ops, and the op still recorded
and counted as every op is. (Mismatches, bad input, lost peers and timeouts of small
all_reduces, which now take this path, are tests/dist/test_faults.py's cases.)"""

import inspect
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from ringrt import _native
from tests.dist import small_workers
from tests.dist.small_workers import _fits, cases, make_input
from tests.world import run_world

UFUNCS = {"SUM": np.add, "AVG": np.add, "PRODUCT": np.multiply, "MIN": np.minimum,
          "MAX": np.maximum, "BAND": np.bitwise_and, "BOR": np.bitwise_or,
          "BXOR": np.bitwise_xor}
BOOL_UFUNCS = {"SUM": np.logical_or, "PRODUCT": np.logical_and, "MIN": np.logical_and,
               "MAX": np.logical_or, "BAND": np.logical_and, "BOR": np.logical_or,
               "BXOR": np.logical_xor}


def reference(dtype: str, op: str, size: int, salt: int, world: int, extreme: bool = False
              ) -> np.ndarray:
    """NumPy on every rank's input, combined in rank order (what every algorithm does)."""
    inputs = [make_input(r, dtype, size, salt, extreme) for r in range(world)]
    ufunc = (BOOL_UFUNCS if dtype == "bool" else UFUNCS)[op]
    out = inputs[0].copy()
    with np.errstate(all="ignore"):
        for x in inputs[1:]:
            ufunc(out, x, out=out)
        if op == "AVG":
            out = out / out.dtype.type(world)
    return out


def _check(world, world_size: int, general_ranks=(), extreme: bool = False,
           native: bool = True) -> None:
    wrong, checked = [], 0
    for rank in range(world_size):
        got = world[rank].arrays
        for dtype, op, size, salt in cases():
            x = make_input(rank, dtype, size, salt, extreme)
            if not _fits(np.dtype(np.float32) if dtype == "bfloat16" else x.dtype, op):
                continue
            fast, general = (got[f"{dtype}/{op}/{size}/{path}"] for path in ("fast", "general"))
            if fast.tobytes() != general.tobytes() or fast.shape != general.shape:
                wrong.append(f"rank {rank} {dtype}/{op}/{size}: fast {fast.ravel()[:4]} "
                             f"general {general.ravel()[:4]}")
            if dtype != "bfloat16":
                want = reference(dtype, op, size, salt, world_size, extreme)
                if want.tobytes() != fast.tobytes():
                    wrong.append(f"rank {rank} {dtype}/{op}/{size}: {fast.ravel()[:4]} vs "
                                 f"NumPy {want.ravel()[:4]}")
            checked += 1
        cases_run = world[rank].values["cases"]
        fast_ops = world[rank].values["fast_ops"]
        in_c = world[rank].values["in_c"]
        if rank in general_ranks:
            assert fast_ops == 0
        else:       # every case on the fast path ran there
            assert fast_ops == cases_run, (fast_ops, cases_run)
            # the C module took the integer and float32/64 cases it compiles, or none at all
            assert in_c > 150 if native and _native.fastpath is not None else in_c == 0
    assert checked > 300 * world_size
    assert not wrong, f"{len(wrong)} wrong:\n" + "\n".join(wrong[:20])


STEPS = {"C module": {}, "Python steps": {"RINGRT_NO_NATIVE": "1"}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("world_size", [2, 3])
def test_fast_path_equals_general_path_and_numpy_bit_for_bit(world_size, steps):
    world = run_world("tests.dist.small_workers:fast_vs_general", world_size, timeout=100,
                      env=STEPS[steps])
    _check(world, world_size, native=not STEPS[steps])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("steps", STEPS)
def test_extreme_values_give_numpys_bits_on_either_steps(steps):
    """Integers that wrap, negative ones, infinities, NaN, signed zeros, subnormals,
    overflowing floats: the C module's arithmetic is NumPy's, bit for bit."""
    world = run_world("tests.dist.small_workers:fast_vs_general", 3, timeout=100,
                      args={"extreme": True}, env=STEPS[steps])
    _check(world, 3, extreme=True, native=not STEPS[steps])


def test_the_c_module_is_built_where_a_compiler_is():
    """``make install`` builds ringrt/_native/_fastpath.c; a missing build must not go
    unnoticed where it could have been built (it is optional only where no compiler is)."""
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    if shutil.which("cc") is None and shutil.which("gcc") is None or not headers.exists():
        pytest.skip("no C compiler or Python headers here: ringrt runs the Python steps")
    assert _native.fastpath is not None, "ringrt._native._fastpath was not built: make install"


@pytest.mark.timeout(120)
def test_a_rank_on_the_general_path_meets_ranks_on_the_fast_path():
    world = run_world("tests.dist.small_workers:fast_vs_general", 3, timeout=100,
                      args={"general_ranks": [1]})
    _check(world, 3, general_ranks=[1])


@pytest.mark.timeout(60)
def test_a_blocking_all_reduce_waits_for_the_async_one_before_it():
    world = run_world("tests.dist.small_workers:async_then_sync", 2, timeout=50)
    for rank in range(2):
        outs = world[rank].arrays["outs"]
        for i, row in enumerate(outs):
            assert (row[:5] == (0 + i) + (1 + i)).all() and (row[5:] == 10 + i + 20 + i).all()


@pytest.mark.timeout(60)
def test_fast_path_ops_are_recorded_and_counted_like_any_op():
    world = run_world("tests.dist.small_workers:recorded", 2, timeout=50)
    source = inspect.getsource(small_workers.recorded).splitlines()
    first = inspect.getsourcelines(small_workers.recorded)[1]
    line = first + next(i for i, text in enumerate(source) if "the call site" in text)
    for rank in range(2):
        got = world[rank].values
        assert got["fast"] is True
        assert got["site_file"].endswith("small_workers.py") and got["site_line"] == line
        assert (got["name"], got["state"], got["algorithm"]) == ("all_reduce", "done", "shm")
        assert got["calls"] >= 4 and got["shm"] >= 4 and got["bytes"] >= 4 * 12
        assert (world[rank].arrays["x"] == 16).all()


@pytest.mark.timeout(60)
@pytest.mark.skipif(_native.fastpath is None, reason="the C module is not built here")
def test_steps_only_times_leaves_the_group_consistent_and_needs_the_c_module():
    world = run_world("tests.dist.small_workers:steps_only", 2, timeout=50)
    for rank in range(2):
        got = world[rank]
        times = got.arrays["times"]
        assert times.shape == (50,) and (times > 0).all()
        assert (got.arrays["before"] == 6).all()          # (1 + 2), then summed again
        assert (got.arrays["after"] == 3).all()
        assert "C module" in got.values["refused"]
