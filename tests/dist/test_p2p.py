"""Point-to-point across processes, on both paths: shared memory (the default on one host)
and sockets (``RINGRT_P2P=sockets``, what multi-host jobs use). Each world runs a whole table
of patterns (``p2p_workers.matrix``); the parent checks every result against what was sent."""

import numpy as np
import pytest

from tests.dist.p2p_workers import SIZES, message
from tests.world import run_world

PATHS = {"shm": {}, "sockets": {"RINGRT_P2P": "sockets"}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path, world_size", [("shm", 2), ("shm", 3), ("shm", 4),
                                              ("sockets", 2), ("sockets", 3)])
def test_every_pattern(path, world_size):
    world = run_world("tests.dist.p2p_workers:matrix", world_size, timeout=100,
                      env=PATHS[path])
    for rank in range(world_size):
        got = {**world[rank].arrays, **world[rank].values}
        left, right = (rank - 1) % world_size, (rank + 1) % world_size
        assert got["path"] == path
        for index, (dtype, count) in enumerate(SIZES):
            want = message(left, index, dtype, count)
            np.testing.assert_array_equal(got[f"ring{index}"], want.view(got[f"ring{index}"].dtype))
        for i in range(4):
            np.testing.assert_array_equal(got["burst_left"][i],
                                          message(left, 100 + i, np.float32, 600_000))
            np.testing.assert_array_equal(got["burst_right"][i],
                                          message(right, 100 + i, np.float32, 600_000))
        assert got["in_order"] == list(range(50))
        if rank == 0:
            assert got["any_source"] == list(range(1, world_size))
            assert got["any_values"] == [10 * r for r in range(1, world_size)]
            kind, text, _ = got["mismatch"]
            assert kind == "CollectiveMismatchError" and "float32[4]" in text and \
                "float64[4]" in text and "rank 1" in text, text
            assert got["after_mismatch"] == [1, 18]
        if rank in (0, world_size - 1):
            peer = world_size - 1 if rank == 0 else 0
            assert got["subgroup"] == [peer, 5 * peer]
        assert got["polled"] == [True, left, left + 0.25]
        assert got["called"] == [True, left + 0.5]
        assert got["bad"] == {"to_self": "ValueError", "from_self": "ValueError",
                              "tag": "ValueError", "read_only": "ValueError",
                              "not_array": "TypeError"}
        if path == "shm":
            assert got["stats"]["grown_rings"] >= 1 and got["stats"]["stashed"] >= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3])
def test_a_receive_does_not_hold_back_the_collectives_after_it(world_size):
    world = run_world("tests.dist.p2p_workers:interleaved", world_size, timeout=45)
    for rank in range(world_size):
        left = (rank - 1) % world_size
        np.testing.assert_array_equal(world[rank].arrays["got"], np.full(4, left, np.float32))
        np.testing.assert_array_equal(world[rank].arrays["total"],
                                      np.full(2, sum(range(world_size)), np.float64))
        assert world[rank].arrays["early"][0] == left + 0.5


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["shm", "sockets"])
@pytest.mark.parametrize("fault", ["timeout", "kill"])
def test_a_receive_that_cannot_complete_says_why(path, fault):
    world = run_world("tests.dist.p2p_workers:faults", 2, timeout=45, env=PATHS[path],
                      args={"fault": fault}, expect_success=False)
    assert world[0].returncode == 0, world.report()
    kind, text, took = world[0].values["outcome"]
    if fault == "timeout":
        assert kind == "TimeoutError" and "tag=1234" in text and "rank 1" in text, text
        assert 2.5 < took < 8, took
    else:
        assert kind == "PeerLostError" and "rank 1" in text, text
        assert took < 8, took
        assert world[0].values["lost_send"][0] == "PeerLostError"
