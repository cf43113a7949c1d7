"""The rest of the torch API on "ringrt", in one world of 4: async ops and futures,
point-to-point, object collectives, coalescing, subgroups, functional collectives and
DTensor (tests/torch/api_workers.py)."""

import numpy as np
import pytest

from tests.world import run_world

WORLD = 4


@pytest.fixture(scope="module")
def tour():
    world = run_world("tests.torch.api_workers:api_tour", WORLD, timeout=90,
                      env={"RINGRT_TIMEOUT": "30"})
    return [{**world[r].arrays, **world[r].values} for r in range(WORLD)]


def total(values) -> float:
    return float(sum(values))


@pytest.mark.timeout(120)
def test_async_ops_complete_in_call_order_and_callbacks_may_start_ops(tour):
    for got in tour:
        sums = [total(r + i for r in range(WORLD)) for i in range(5)]
        want = np.concatenate([np.full(1000 * (i + 1), s, np.float32) for i, s in enumerate(sums)])
        np.testing.assert_array_equal(got["async_and_futures/async_sums"], want)
        assert got["async_and_futures/done_before_wait"]      # the blocking op came after them
        np.testing.assert_array_equal(got["async_and_futures/big"], np.full(3, 6.0, np.float32))
        assert got["async_and_futures/future_value_is_tensor"]
        # inner all_reduce of ones (4) + the first op's future value (4)
        np.testing.assert_array_equal(got["async_and_futures/chained"],
                                      np.full(4, 2.0 * WORLD, np.float32))
        assert got["async_and_futures/barrier_waited"] is True


@pytest.mark.timeout(120)
def test_point_to_point(tour):
    for rank, got in enumerate(tour):
        left = (rank - 1) % WORLD
        np.testing.assert_array_equal(got["point_to_point/ring"], np.full(3, left, np.int32))
        assert got["point_to_point/ring_sender"] == left
        np.testing.assert_array_equal(got["point_to_point/big"],
                                      np.arange(3, dtype=np.float32) + left)
        np.testing.assert_array_equal(got["point_to_point/batch"],
                                      np.full(5, left + 0.5, np.float32))
        if rank == 0:
            assert got["point_to_point/any_source"] == list(range(1, WORLD))
        want = "[{'to': 'one'}, (1, 2)]" if rank == 1 else "[None, None]"
        assert got["point_to_point/objects"] == want


@pytest.mark.timeout(120)
def test_object_collectives(tour):
    for rank, got in enumerate(tour):
        assert got["object_collectives/broadcast"] == repr([{"from": WORLD - 1},
                                                            [WORLD - 1] * 3])
        assert got["object_collectives/gathered"] == repr(
            [{"rank": r, "text": "x" * r} for r in range(WORLD)])
        assert got["object_collectives/collected"] == (
            repr([10 * r for r in range(WORLD)]) if rank == 1 else "None")
        assert got["object_collectives/scattered"] == f"to {rank}"


@pytest.mark.timeout(120)
def test_coalesced_ops(tour):
    for rank, got in enumerate(tour):
        ones_sum = total(r + 1 for r in range(WORLD))
        np.testing.assert_array_equal(got["coalescing/manager_all_reduce"],
                                      np.full(6, ones_sum, np.float32))
        np.testing.assert_array_equal(got["coalescing/manager_all_gather"],
                                      np.repeat(np.arange(WORLD, dtype=np.float32), 4))
        np.testing.assert_array_equal(got["coalescing/manager_reduce_scatter"],
                                      WORLD * np.array([2 * rank, 2 * rank + 1], np.float32))
        np.testing.assert_array_equal(
            got["coalescing/all_reduce_coalesced"],
            np.concatenate([np.full(5, total(range(WORLD))), np.full(4, WORLD)]).astype(
                np.float32))
        ranks = np.arange(WORLD, dtype=np.float32)[:, None]
        np.testing.assert_array_equal(got["coalescing/all_gather_coalesced"],
                                      np.hstack([np.repeat(ranks, 2, axis=1),
                                                 np.repeat(ranks + 10, 3, axis=1)]))


@pytest.mark.timeout(120)
def test_subgroups_next_to_gloo_and_world_ops(tour):
    groups = {"odd": [1, 3], "low": [0, 1, 2]}
    for rank, got in enumerate(tour):
        for name, members in groups.items():
            if rank not in members:
                assert got[f"subgroups/{name}_none"]
                continue
            want = [total(m + 1 for m in members), *map(float, members), float(members[-1])]
            np.testing.assert_array_equal(got[f"subgroups/{name}"],
                                          np.array(want, np.float32))
            assert got[f"subgroups/{name}_rank"] == [members.index(rank), len(members)]
            np.testing.assert_array_equal(got[f"subgroups/{name}_world"],
                                          np.full(2, WORLD, np.float32))
        if rank in groups["odd"]:
            assert got["subgroups/odd_gloo_equal"]
        if rank in (2, 3):
            np.testing.assert_array_equal(got["subgroups/local"], np.full(2, 5.0, np.float32))


@pytest.mark.timeout(120)
def test_functional_collectives_and_dtensor(tour):
    for rank, got in enumerate(tour):
        np.testing.assert_array_equal(got["functional/all_reduce"],
                                      np.full(4, total(r + 1 for r in range(WORLD)), np.float32))
        np.testing.assert_array_equal(got["functional/all_gather"],
                                      np.repeat(np.arange(WORLD, dtype=np.float32), 2))
        np.testing.assert_array_equal(got["functional/dtensor"],
                                      np.arange(4.0 * WORLD, dtype=np.float32))
        np.testing.assert_array_equal(got["functional/local"],
                                      np.arange(4.0 * rank, 4.0 * rank + 4, dtype=np.float32))
