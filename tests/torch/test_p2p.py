"""torch's point-to-point on "ringrt", on both paths (shared memory, the default on one host,
and sockets): send/recv, isend/irecv, futures, polling, batch_isend_irecv, any-source."""

import numpy as np
import pytest

from tests.world import run_world

WORLD = 3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", ["shm", "sockets"])
def test_point_to_point_on_each_path(path):
    env = {"RINGRT_TIMEOUT": "30", "RINGRT_P2P": "auto" if path == "shm" else "sockets"}
    world = run_world("tests.torch.api_workers:point_to_point_more", WORLD, timeout=90, env=env)
    for rank in range(WORLD):
        got = {**world[rank].arrays, **world[rank].values}
        left, right = (rank - 1) % WORLD, (rank + 1) % WORLD
        assert got["path"] == path
        np.testing.assert_array_equal(got["tour/ring"], np.full(3, left, np.int32))
        np.testing.assert_array_equal(got["tour/big"], np.arange(3, dtype=np.float32) + left)
        np.testing.assert_array_equal(got["tour/batch"], np.full(5, left + 0.5, np.float32))
        np.testing.assert_array_equal(got["future"], np.full(4, left + 0.5, np.float32))
        np.testing.assert_array_equal(got["polled"], np.full(2, left, np.float32))
        for i in range(3):
            np.testing.assert_array_equal(got["batch_left"][i], np.full(2, left * 10 + i))
            np.testing.assert_array_equal(got["batch_right"][i], np.full(2, right * 10 + i))
        if rank == 0:
            assert got["tour/any_source"] == list(range(1, WORLD))
            assert got["any_source"] == list(range(1, WORLD))
