"""torch's DDP (buckets, no_sync, gradient_as_bucket_view, find_unused_parameters,
static_graph, comm hooks), ZeroRedundancyOptimizer and FSDP (1 and 2) over "ringrt" end with
the parameters they end with over gloo, and those of one process on the whole batch.

At world 2 every reduction is one addition, so ringrt and gloo must agree bit for bit; at
world 4 their summation orders differ, so both must be as close to the single-process
parameters as each other. The two worlds run torch's async ops the two ways the backend can
(``RINGRT_TORCH_ASYNC``): inline on the calling thread, and on ringrt's executor thread.
"""

import numpy as np
import pytest

from tests.torch.train_workers import VARIANTS
from tests.world import run_world

# Largest |parameter - single-process parameter| allowed: float32 rounding, or what a lossy
# comm hook costs (fp16/bf16 compression; PowerSGD's rank-1 approximation).
TOLERANCE = {"ddp_fp16_hook": 1e-4, "ddp_bf16_hook": 1e-3, "ddp_powersgd": 2e-2}
REFERENCE = {"ddp_no_sync": "single_micro", "ddp_unused": "single_skip",
             "zero": "single_momentum"}


def train(world_size: int, async_mode: str) -> list[dict]:
    world = run_world("tests.torch.train_workers:train_everything", world_size, timeout=120,
                      env={"RINGRT_TIMEOUT": "30", "RINGRT_TORCH_ASYNC": async_mode})
    return [world[r].arrays for r in range(world_size)]


def check_against_single_process(results: list[dict]) -> None:
    for name in VARIANTS:
        single = results[0][REFERENCE.get(name, "single")]
        for rank, got in enumerate(results):
            ours = got[f"ringrt/{name}"]
            assert ours.tobytes() == results[0][f"ringrt/{name}"].tobytes(), (name, rank)
            assert np.abs(ours - single).max() <= TOLERANCE.get(name, 1e-6), name


@pytest.mark.timeout(150)
def test_world_2_matches_gloo_bit_for_bit_and_the_single_process_run():
    results = train(2, "inline")          # DDP's all-reduces on the backward thread
    check_against_single_process(results)
    for name in VARIANTS:
        for got in results:
            assert got[f"ringrt/{name}"].tobytes() == got[f"gloo/{name}"].tobytes(), name


@pytest.mark.timeout(150)
def test_world_4_is_as_close_to_the_single_process_run_as_gloo():
    results = train(4, "thread")          # DDP's all-reduces on ringrt's thread
    check_against_single_process(results)
    for name in VARIANTS:
        single = results[0][REFERENCE.get(name, "single")]
        ours, gloo = results[0][f"ringrt/{name}"], results[0][f"gloo/{name}"]
        np.testing.assert_allclose(ours, gloo, rtol=0, atol=TOLERANCE.get(name, 1e-6) / 10
                                   if name not in TOLERANCE else TOLERANCE[name])
        assert np.abs(ours - single).max() <= 2 * np.abs(gloo - single).max() + 1e-7, name
