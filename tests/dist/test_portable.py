"""Every collective over the portable shared-memory path, forced on Linux: ``shm_open``
names (RINGRT_SHM_OPEN=1) and polling waits (RINGRT_NO_FUTEX=1); unit tests of the pieces are
in tests/unit/test_portable.py."""

import os

import pytest

from tests.dist.cases import cases, expected_for_rank, same_bits
from tests.world import run_world


@pytest.mark.timeout(200)
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="Linux: shm_open names live in /dev/shm")
def test_every_collective_over_shm_open_and_polling_waits():
    world = run_world("tests.dist.workers:portable_shm", 3, timeout=150,
                      env={"RINGRT_SHM_OPEN": "1", "RINGRT_NO_FUTEX": "1"})
    failures = []
    for case in cases(3, True):
        for rank in range(3):
            got = world[rank].arrays[case.name]
            want = expected_for_rank(case, 3, rank)
            if got.size != want.size or not same_bits(got, want.reshape(got.shape)):
                failures.append(f"{case.name} rank {rank}")
    assert not failures, failures[:20]
    for result in world.ranks:
        assert result.values["shm_open"] is True and result.values["futex"] is False
        assert result.values["shm_ops"] > 0            # shared memory really carried ops
