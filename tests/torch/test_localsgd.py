"""DiLoCo for torch (ringrt.torch.localsgd) against a single-process simulation of the same
algorithm, and torch's own DDP comm hooks over "ringrt" against gloo.

World 2 ends with the reference's parameters to float32 rounding (every average is one
addition); bf16 pseudo-gradients differ from the reference by the rounding of a bf16 sum.
torch's bf16_compress_hook and PowerSGD hook (seeded: its random projections come from the
state's own RNG) are deterministic, and at world 2 each reduction is one addition, so "ringrt"
and gloo must agree bit for bit.
"""

import numpy as np
import pytest

from tests.torch.localsgd_workers import CASES
from tests.world import run_world

# one bf16 rounding of the averaged pseudo-gradient (with error feedback, of each too)
TOLERANCE = {"bf16": 2e-3, "bf16-ef": 2e-3}
FLOAT32 = 1e-5
# DDP inside a host sums its ranks' gradients in another order than the reference's one
# batch: a value on an int8 rounding boundary may round the other way, one scale off, which
# error feedback then carries to the next outer step
INT8_FLIP = 5e-4


def host_env(hosts: list[list[int]]) -> dict[int, dict]:
    return {rank: {"RINGRT_HOST_ID": f"host{h}"} for h, ranks in enumerate(hosts)
            for rank in ranks}


@pytest.mark.timeout(120)
def test_world_2_diloco_matches_the_simulation_and_torch_hooks_match_gloo():
    world = run_world("tests.torch.localsgd_workers:single_level", 2, timeout=100,
                      env={"RINGRT_TIMEOUT": "30"})
    for name in CASES:
        for rank in range(2):
            got = world[rank].arrays[name]
            want = world[0].arrays[f"reference/{name}/{rank}"]
            assert np.abs(got - want).max() <= TOLERANCE.get(name, FLOAT32), (name, rank)
    for rank in range(2):     # a run checkpointed mid-way (an outer step pending) resumes exactly
        assert world[rank].arrays["resumed"].tobytes() == \
            world[rank].arrays["fragments"].tobytes()
        assert world[rank].arrays["resumed-ef"].tobytes() == \
            world[rank].arrays["int8-ef"].tobytes()      # the residuals are in the state
        # error feedback changed the run by far more than the comparison's tolerance
        without = world[0].arrays[f"reference/int8-ef-off/{rank}"]
        assert np.abs(world[rank].arrays["int8-ef"] - without).max() > 20 * FLOAT32
    # not the same as no sync at all: the replicas were pulled together
    assert np.abs(world[0].arrays["plain"] - world[1].arrays["plain"]).max() < 1e-6
    mean = (world[0].arrays["consolidate/before"] + world[1].arrays["consolidate/before"]) / 2
    for rank in range(2):     # consolidate: every replica the mean, Adam's moments equal
        got = world[rank].arrays
        assert got["consolidate/after"].tobytes() == world[0].arrays["consolidate/after"].tobytes()
        assert got["consolidate/exp_avg"].tobytes() == \
            world[0].arrays["consolidate/exp_avg"].tobytes()
        assert got["consolidate/global"].tobytes() == got["consolidate/after"].tobytes()
        assert np.abs(got["consolidate/after"] - mean).max() <= FLOAT32
        assert got["consolidate/residual-after"].tobytes() == \
            got["consolidate/residual-before"].tobytes()
    assert not np.array_equal(world[0].arrays["consolidate/before"],
                              world[1].arrays["consolidate/before"])
    for hook in ("bf16", "powersgd"):
        for rank in range(2):
            ours, gloo = world[rank].arrays[f"ringrt/{hook}"], world[rank].arrays[f"gloo/{hook}"]
            assert ours.tobytes() == gloo.tobytes(), (hook, rank)


@pytest.mark.timeout(120)
def test_two_levels_ddp_inside_a_host_diloco_across_hosts():
    hosts = [[0, 1], [2]]                  # uneven: host 0's second rank relays nothing
    world = run_world("tests.torch.localsgd_workers:two_level", 3, timeout=100,
                      args={"hosts": hosts}, per_rank_env=host_env(hosts),
                      env={"RINGRT_TIMEOUT": "30"})
    for h, ranks in enumerate(hosts):
        want = world[0].arrays[f"reference/{h}"]
        for rank in ranks:
            assert np.abs(world[rank].arrays["two_level"] - want).max() <= FLOAT32, rank
            with_ef = world[rank].arrays["two_level_ef"] - world[0].arrays[f"reference-ef/{h}"]
            assert np.abs(with_ef).max() <= INT8_FLIP, rank
