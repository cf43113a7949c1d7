"""DDP and ZeRO-1 across real processes equal single-process training (tests/world.py harness).

The references are computed here, in the test process, with the same model code in float64:
one process, the whole global batch, the unsharded optimizer.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.train import workers
from tests.world import run_world

STEPS = 20


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"world{w}")
def ddp_world(request):
    return request.param, run_world("tests.train.workers:ddp_cases", request.param, timeout=80,
                                    args={"steps": STEPS})


# ZeRO all-gathers from the output's own block (in place); every all_gather algorithm must
# accept that, so each one is forced in turn.
@pytest.fixture(scope="module", params=[(w, a) for w in (2, 4) for a in ("shm", "ring", "direct")],
                ids=lambda p: f"world{p[0]}-{p[1]}")
def zero_world(request):
    world_size, algorithm = request.param
    return world_size, run_world("tests.train.workers:zero_cases", world_size, timeout=60,
                                 args={"steps": STEPS},
                                 env={"RINGRT_ALGO": f"all_gather={algorithm}"})


def params_of(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def assert_matches(got: dict, want: dict, rtol: float = 1e-5) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=rtol, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("overlap", [False, True], ids=["sync-only", "grad_ready"])
@pytest.mark.parametrize("cap", [25, workers.TINY_BUCKET_MB], ids=["1-bucket", "3-buckets"])
def test_ddp_equals_single_process_training(ddp_world, overlap, cap):
    world_size, world = ddp_world
    reference = workers.reference("sgd", STEPS)
    prefix = f"ddp/{overlap}/{cap}/"
    assert_matches(params_of(world[0].arrays, prefix), reference)
    for rank in range(1, world_size):                   # replicas stay bit-identical
        for name, value in params_of(world[rank].arrays, prefix).items():
            assert value.tobytes() == world[0].arrays[prefix + name].tobytes(), (rank, name)


def test_ddp_with_zero_copy_sized_buckets(ddp_world):
    world_size, world = ddp_world
    assert world[0].values["buckets/wide"] == 2          # 134 KiB and 130 KiB
    assert_matches(params_of(world[0].arrays, "wide/"),
                   workers.reference("sgd", STEPS, workers.WIDE_SIZES))
    for rank in range(1, world_size):
        assert all(v.tobytes() == world[0].arrays["wide/" + k].tobytes()
                   for k, v in params_of(world[rank].arrays, "wide/").items())


def test_ddp_bucket_counts(ddp_world):
    _, world = ddp_world
    assert world[0].values["buckets/25"] == 1
    assert world[0].values[f"buckets/{workers.TINY_BUCKET_MB}"] == 3


def test_ddp_no_sync_accumulation_equals_the_full_batch(ddp_world):
    world_size, world = ddp_world
    assert_matches(params_of(world[0].arrays, "no_sync/"), workers.reference("sgd", STEPS))
    for rank in range(1, world_size):
        assert all(v.tobytes() == world[0].arrays["no_sync/" + k].tobytes()
                   for k, v in params_of(world[rank].arrays, "no_sync/").items())


def test_ddp_numpy_idioms_train_like_a_single_process(ddp_world):
    world_size, world = ddp_world
    assert_matches(params_of(world[0].arrays, "idioms/"), workers.reference_plain_sgd(STEPS))
    for rank in range(1, world_size):
        assert all(v.tobytes() == world[0].arrays["idioms/" + k].tobytes()
                   for k, v in params_of(world[rank].arrays, "idioms/").items())


def test_ddp_misuse_raises_clear_errors(ddp_world):
    errors = ddp_world[1][0].values["misuse"]
    assert errors["unknown"][0] == "KeyError" and "'nope'" in errors["unknown"][1]
    assert errors["twice"][0] == "RuntimeError" and "twice" in errors["twice"][1]
    assert errors["wrong_shape"][0] == "ValueError" and "ddp.grads['w0'] has shape" in \
        errors["wrong_shape"][1]
    assert errors["mixed_dtypes"][0] == "TypeError" and "one dtype" in errors["mixed_dtypes"][1]
    assert errors["int_params"][0] == "TypeError" and "floating" in errors["int_params"][1]
    assert errors["zero_grad_in_flight"][0] == "RuntimeError"


@pytest.mark.parametrize("kind", sorted(workers.OPTIMIZERS))
def test_zero_equals_the_unsharded_optimizer(zero_world, kind):
    world_size, world = zero_world
    reference = workers.reference(kind, STEPS)
    for rank in range(world_size):
        assert_matches(params_of(world[rank].arrays, f"{kind}/"), reference)


@pytest.mark.parametrize("kind", sorted(workers.OPTIMIZERS))
def test_zero_state_is_sharded(zero_world, kind):
    world_size, world = zero_world
    numel = sum(int(np.prod(p.shape)) for p in workers.reference(kind, 0).values())
    per_element = {"adam": 2, "sgd": 1}[kind] * 8          # float64 moments / momentum
    full = numel * per_element
    shards = [world[r].values[f"shard/{kind}"] for r in range(world_size)]
    assert shards[0][0] == 0 and shards[-1][1] >= numel
    for rank in range(world_size):
        state_bytes = world[rank].values[f"state_bytes/{kind}"]
        assert state_bytes == (shards[rank][1] - shards[rank][0]) * per_element
        assert full / world_size <= state_bytes < full / world_size + world_size * per_element
