"""DiLoCo / local SGD and compressed DDP across real processes, against NumPy simulations.

One world per size (2 and 3 ranks, one host) runs every case (tests/train/localsgd_workers.py).
The references here are written independently of ringrt: W replicas in one process, each on
its own data shard with plain SGD, averaged pseudo-gradients (rounded as bf16 / int8 would
send them, with or without each replica's error-feedback residual), the outer Nesterov step,
the delay and the fragments; PowerSGD's math with error feedback, written out per replica.
"""

from __future__ import annotations

import numpy as np
import pytest

from examples.mlp import MLP
from tests.train import localsgd_workers as lw
from tests.train.workers import SIZES, local_batch
from tests.world import run_world


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"world{w}")
def world(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("diloco-ckpt")
    return request.param, run_world("tests.train.localsgd_workers:cases", request.param,
                                    timeout=120, args={"ckpt_dir": str(directory)})


def params_of(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


# --- the reference: DiLoCo simulated in one process ---------------------------------------


def bf16(values: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (nearest, ties to even) and back."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32).astype(np.float64)


def int8(values: np.ndarray, chunk: int) -> np.ndarray:
    """What int8 with one scale per ``chunk`` elements carries."""
    out = np.empty_like(values)
    for lo in range(0, len(values), chunk):
        block = values[lo:lo + chunk].astype(np.float32)
        scale = np.float32(np.abs(block).max() / 127)
        out[lo:lo + chunk] = np.rint(block / scale) * scale if scale else 0
    return out


def simulate_diloco(world_size, sync_every, fragments=1, delay=1, compress=None, local=False,
                    int8_chunk=256, steps=lw.STEPS, replicas=None, error_feedback=False,
                    residuals=None):
    """Every replica's final parameters under DiLoCo. A replica is a list of ranks (one host
    of the two-level mode) training on the mean of their shards' gradients; default: each
    rank alone. With ``error_feedback`` each replica adds to its pseudo-gradient what the
    rounding took from its last one (of that fragment); ``residuals`` (a list) receives the
    replicas' final residuals."""
    replicas = replicas or [[r] for r in range(world_size)]
    lr, momentum, nesterov = (1.0, 0.0, False) if local else (0.7, 0.9, True)
    models = [MLP(SIZES, seed=0, dtype=np.float64) for _ in replicas]
    names = list(models[0].params)
    flat = [np.concatenate([m.params[n].ravel() for n in names]) for m in models]
    anchor, velocity = flat[0].copy(), np.zeros_like(flat[0])
    owed = [np.zeros_like(anchor) for _ in replicas]        # error-feedback residuals
    edges = np.linspace(0, len(anchor), fragments + 1).round().astype(int)
    period, pending = sync_every // fragments, None

    def apply(step):
        fragment, started, snapshots, average = pending
        piece = slice(edges[fragment], edges[fragment + 1])
        velocity[piece] = momentum * velocity[piece] + average
        update = average + momentum * velocity[piece] if nesterov else velocity[piece]
        anchor[piece] -= lr * update
        for x, snapshot in zip(flat, snapshots, strict=True):
            x[piece] = anchor[piece] + (x[piece] - snapshot if step > started else 0)

    for step in range(1, steps + 1):
        for r, x in enumerate(flat):
            grads = np.mean([_grads_at(models[r], x, names, step - 1, rank, world_size)
                             for rank in replicas[r]], axis=0)
            x -= 0.1 * grads
        if pending is not None and step >= pending[1] + delay:
            apply(step)
            pending = None
        if step % period == 0:
            fragment = (step // period - 1) % fragments
            piece = slice(edges[fragment], edges[fragment + 1])
            deltas = [anchor[piece] - x[piece] for x in flat]
            if error_feedback:
                deltas = [d + e[piece] for d, e in zip(deltas, owed, strict=True)]
            exact = deltas
            if compress == "bf16":
                deltas = [bf16(d) for d in deltas]
            elif compress == "int8":
                deltas = [int8(d, int8_chunk) for d in deltas]
            if error_feedback:
                for e, want, sent in zip(owed, exact, deltas, strict=True):
                    e[piece] = want - sent
            pending = (fragment, step, [x[piece].copy() for x in flat], np.mean(deltas, axis=0))
            if delay == 0:
                apply(step)
                pending = None
    if residuals is not None:
        residuals.extend(owed)
    return [_unflat(x, models[0].params, names) for x in flat]


def _grads_at(model, x, names, step, rank, world_size):
    model.params = _unflat(x, model.params, names)
    grads = {n: np.zeros_like(p) for n, p in model.params.items()}
    model.loss_and_grads(*local_batch(step, rank, world_size), grads)
    return np.concatenate([grads[n].ravel() for n in names])


def _unflat(x, like, names):
    out, offset = {}, 0
    for name in names:
        size = like[name].size
        out[name] = x[offset:offset + size].reshape(like[name].shape).copy()
        offset += size
    return out


# Tolerances: float64 sums in another order (plain, int8: every rank decodes the same int8
# values and sums them in float32, the reference in float64); bfloat16 partial sums rounded in
# another order than the reference's mean of rounded values (bf16: ~2**-8 of a delta of up
# to 0.5 per rounding, a few roundings per sum at world 3).
TOLERANCE = {None: 1e-9, "bf16": 1e-2, "int8": 1e-6}


@pytest.mark.parametrize("case", list(lw.DILOCO_CASES))
def test_diloco_equals_the_simulation(world, case):
    world_size, results = world
    options = dict(lw.DILOCO_CASES[case])
    options.pop("ddp", None)
    residuals = []
    want = simulate_diloco(world_size, **options, residuals=residuals)
    atol = TOLERANCE[options.get("compress")]
    for rank in range(world_size):
        got = params_of(results[rank].arrays, f"{case}/")
        assert set(got) == set(want[rank])
        for name, value in want[rank].items():
            np.testing.assert_allclose(got[name], value, rtol=0, atol=atol,
                                       err_msg=f"{case} rank {rank} {name}")
        if options.get("error_feedback"):       # each rank's residual is its own
            np.testing.assert_allclose(results[rank].arrays[f"residual/{case}"],
                                       residuals[rank], rtol=0, atol=atol,
                                       err_msg=f"{case} rank {rank} residual")
        else:
            assert f"residual/{case}" not in results[rank].arrays


@pytest.mark.parametrize("case", [c for c, o in lw.DILOCO_CASES.items()
                                  if o.get("error_feedback") and o["compress"] == "int8"])
def test_error_feedback_changes_the_run_by_more_than_the_tolerance(world, case):
    """The comparison above could not pass with error feedback ignored (int8; bf16's
    tolerance, set by the rounding of its sums, is larger than what error feedback changes
    in 13 steps, so there the comparison checks the plumbing, not the arithmetic)."""
    world_size, results = world
    options = {k: v for k, v in lw.DILOCO_CASES[case].items() if k != "ddp"}
    without = simulate_diloco(world_size, **dict(options, error_feedback=False))
    got = params_of(results[0].arrays, f"{case}/")
    gap = max(np.abs(got[name] - without[0][name]).max() for name in got)
    assert gap > 3 * TOLERANCE[options["compress"]], gap
    residual = results[0].arrays[f"residual/{case}"]
    assert np.abs(residual).max() > 0


def test_the_replicas_differ_between_syncs_and_the_delay_matters(world):
    world_size, results = world
    got = params_of(results[0].arrays, "h4-delay/")["w0"]
    other = params_of(results[1].arrays, "h4-delay/")["w0"]
    assert not np.array_equal(got, other)           # 13 steps: one local step since the sync
    assert not np.allclose(got, params_of(results[0].arrays, "h4-nodelay/")["w0"])


# --- PowerSGD and bf16 DDP ---------------------------------------------------------------------


def simulate_ddp(world_size, compress, powersgd_rank=4, steps=lw.STEPS, replicas=None):
    """Synchronous DDP with compressed gradients; every replica ends equal, so one model.
    Replicas (hosts) average their ranks' gradients exactly, then compress across."""
    replicas = replicas or [[r] for r in range(world_size)]
    model = MLP(SIZES, seed=0, dtype=np.float64)
    names = list(model.params)
    layout_order = list(reversed(names))             # DDP's buffer order: Qs drawn in it
    rng = np.random.default_rng(0)
    q, error = {}, {}
    for name in layout_order:
        shape = model.params[name].shape
        if compress == "powersgd" and len(shape) == 2:
            rank = min(powersgd_rank, *shape)
            if sum(shape) * rank < shape[0] * shape[1]:
                q[name] = rng.standard_normal((shape[1], rank))
                error[name] = [np.zeros(shape) for _ in replicas]
    for step in range(steps):
        local = []
        for ranks in replicas:
            per_rank = []
            for r in ranks:
                grads = {n: np.zeros_like(p) for n, p in model.params.items()}
                model.loss_and_grads(*local_batch(step, r, world_size), grads)
                per_rank.append(grads)
            local.append({n: np.mean([g[n] for g in per_rank], axis=0) for n in names})
        for name in names:
            if compress == "bf16":
                average = np.mean([bf16(g[name]) for g in local], axis=0)
            elif name in q:
                m = [g[name] + e for g, e in zip(local, error[name], strict=True)]
                p = np.linalg.qr(np.mean([mi @ q[name] for mi in m], axis=0))[0]
                q[name] = np.mean([mi.T @ p for mi in m], axis=0)
                average = p @ q[name].T
                error[name] = [mi - average for mi in m]
            else:
                average = np.mean([g[name] for g in local], axis=0)
            model.params[name] -= 0.1 * average
    return model.params


@pytest.mark.parametrize("case", list(lw.DDP_CASES))
def test_compressed_ddp_equals_the_simulation(world, case):
    world_size, results = world
    options = lw.DDP_CASES[case]
    want = simulate_ddp(world_size, options["compress"], options.get("powersgd_rank", 4))
    exact = simulate_ddp(world_size, None)
    atol = 1e-2 if options["compress"] == "bf16" else 1e-7
    for rank in range(world_size):
        got = params_of(results[rank].arrays, f"{case}/")
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=0, atol=atol,
                                       err_msg=f"{case} rank {rank} {name}")
            if rank:                                 # replicas stay identical
                assert got[name].tobytes() == params_of(results[0].arrays,
                                                        f"{case}/")[name].tobytes()
    if options["compress"] == "powersgd":            # it really compressed something
        assert not np.allclose(params_of(results[0].arrays, f"{case}/")["w0"], exact["w0"],
                               atol=1e-6)


# --- checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(lw.RESUME))
@pytest.mark.parametrize("resumed", ["resumed", "state-resumed"])
def test_resumed_run_continues_bit_for_bit(world, case, resumed):
    _assert_resumed_equals_uninterrupted(world, case, resumed,
                                         lambda a, b: a.tobytes() == b.tobytes())


@pytest.mark.parametrize("case", list(lw.COMPRESSED_RESUME))
def test_compressed_ddp_resumed_from_a_checkpoint_continues_bit_for_bit(world, case):
    _assert_resumed_equals_uninterrupted(world, case, "resumed", np.array_equal)


def _assert_resumed_equals_uninterrupted(world, case: str, resumed: str, equal) -> None:
    """Every rank's parameters of run ``case-resumed`` equal (``equal``) its uninterrupted
    run's, parameter by parameter."""
    world_size, results = world
    for rank in range(world_size):
        want = params_of(results[rank].arrays, f"{case}-uninterrupted/")
        got = params_of(results[rank].arrays, f"{case}-{resumed}/")
        assert got and set(got) == set(want)
        for name in want:
            assert equal(got[name], want[name]), (case, resumed, rank, name)


def test_a_checkpoint_without_the_compressor_state_loads_and_restarts_it(world):
    world_size, results = world
    for rank in range(world_size):
        values, arrays = results[rank].values, results[rank].arrays
        warned = values["old/warnings"]
        if rank == 0:
            assert len(warned) == 1 and "older ringrt" in warned[0], warned
            assert "restart" in warned[0] and "\n" not in warned[0]
        else:
            assert warned == []
        assert values["old/restarted"] and values["old/trained-state-differs"]
        saved, loaded = params_of(arrays, "old-saved/"), params_of(arrays, "old-loaded/")
        assert all(np.array_equal(loaded[n], saved[n]) for n in saved)
        # the state mattered: restarting it changes the rest of the run
        continued = params_of(arrays, "old-continued/")
        uninterrupted = params_of(arrays, "psgd-uninterrupted/")
        assert not np.array_equal(continued["w0"], uninterrupted["w0"])


def test_a_checkpoint_with_other_compression_options_restarts_the_state(world):
    world_size, results = world
    for rank in range(world_size):
        values = results[rank].values
        warned = values["other/rank1/warnings"]
        if rank == 0:
            assert len(warned) == 1 and "this DDP has {'compress': 'powersgd', " \
                "'powersgd_rank': 1}" in warned[0], warned
        else:
            assert warned == []
        assert values["other/plain/warnings"] == []
        assert "build it with the saved options" in values["other/refused"]


def test_error_feedback_residuals_restart_where_the_checkpoint_has_none_that_fits(world):
    world_size, results = world
    for rank in range(world_size):
        values = results[rank].values
        assert values["ef-restart/as-saved/warnings"] == []
        assert values["ef-restart/as-saved/nonzero"]
        assert values["ef-restart/chunk/zero"] and values["ef-restart/resized/zero"]
        for case, words in (("chunk", "'int8_chunk': 32"),
                            ("resized", f"saved by {world_size + 1} ranks")):
            warned = values[f"ef-restart/{case}/warnings"]
            if rank == 0:
                assert len(warned) == 1 and words in warned[0], warned
                assert "residuals restart at zero" in warned[0]
            else:
                assert warned == []
        assert "build it with the saved options" in values["ef-restart/refused"]
        assert f"on rank {rank}" in values["ef-restart/refused"]


# --- two levels: "hosts" from RINGRT_HOST_ID, even (2 x 2: shares) and uneven (2 + 1) --------


@pytest.fixture(scope="module", ids=lambda p: p[0],
                params=[("even", ["a", "a", "b", "b"]), ("uneven", ["a", "a", "b"])])
def two_level_world(request):
    hosts = request.param[1]
    result = run_world("tests.train.localsgd_workers:two_level_cases", len(hosts), timeout=120,
                       per_rank_env={r: {"RINGRT_HOST_ID": f"host-{h}"}
                                     for r, h in enumerate(hosts)})
    return len(hosts), result


@pytest.mark.parametrize("case", list(lw.TWO_LEVEL_DILOCO) + list(lw.TWO_LEVEL_DDP))
def test_two_levels_equal_the_simulation_with_one_replica_per_host(two_level_world, case):
    world_size, results = two_level_world
    hosts = results[0].values["hosts"]
    assert len(hosts) == 2
    if case in lw.TWO_LEVEL_DILOCO:
        want = simulate_diloco(world_size, replicas=hosts, **lw.TWO_LEVEL_DILOCO[case])
    else:
        options = lw.TWO_LEVEL_DDP[case]
        one = simulate_ddp(world_size, options["compress"], options.get("powersgd_rank", 4),
                           replicas=hosts)
        want = [one] * len(hosts)
    compress = lw.TWO_LEVEL_DILOCO.get(case, lw.TWO_LEVEL_DDP.get(case)).get("compress")
    atol = {None: 1e-9, "int8": 2e-3, "bf16": 1e-2, "powersgd": 1e-7}[compress]
    for replica, ranks in enumerate(hosts):
        for rank in ranks:
            got = params_of(results[rank].arrays, f"{case}/")
            for name, value in want[replica].items():
                np.testing.assert_allclose(got[name], value, rtol=0, atol=atol,
                                           err_msg=f"{case} rank {rank} {name}")
            first = params_of(results[ranks[0]].arrays, f"{case}/")   # a host's ranks agree
            assert all(got[n].tobytes() == first[n].tobytes() for n in got), (case, rank)
