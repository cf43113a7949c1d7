"""Every collective x world sizes 1-4 x dtypes x sizes, against NumPy on the gathered inputs.

One world per (size, algorithm setting) runs the whole case table; the parent regenerates
every rank's inputs and checks each rank's result bit for bit (inputs are small integers, so
the exact result is well defined in every dtype), which also proves that all ranks hold
bit-identical results.
"""

import numpy as np
import pytest

from tests.dist.cases import cases, expected_for_rank, same_bits
from tests.world import run_world

# Force the algorithm not chosen by default, with tiny segments so pipelining is exercised.
ALTERNATE = {
    "RINGRT_ALGO": "all_reduce=ring,broadcast=chain,reduce=ring,all_gather=ring,"
                   "reduce_scatter=ring,gather=direct,scatter=direct,all_to_all=direct",
    "RINGRT_SEGMENT_BYTES": "1024",
}
SMALL_ALGOS = {
    "RINGRT_ALGO": "all_reduce=recursive_doubling,broadcast=binomial,reduce=binomial,"
                   "all_gather=direct,reduce_scatter=direct,gather=direct,scatter=direct,"
                   "all_to_all=direct",
}


def check_world(world_size, big, env=None, tcp=False):
    env = dict(env or {})
    if tcp:
        env["RINGRT_TRANSPORT"] = "tcp"
    world = run_world("tests.dist.workers:collective_matrix", world_size, timeout=150,
                      args={"big": big}, env=env)
    failures = []
    for case in cases(world_size, big):
        for rank in range(world_size):
            got = world[rank].arrays[case.name]
            want = expected_for_rank(case, world_size, rank)
            if got.size != want.size or not same_bits(got, want.reshape(got.shape)):
                failures.append(f"{case.name} rank {rank}: got {got.ravel()[:8]} want "
                                f"{want.ravel()[:8]}")
    assert not failures, f"{len(failures)} wrong:\n" + "\n".join(failures[:30])


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_every_collective_default_algorithms(world_size):
    check_world(world_size, big=True)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_every_collective_alternate_algorithms_small_segments(world_size):
    check_world(world_size, big=False, env=ALTERNATE)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world_size", [3, 4])
def test_ring_reduce_on_big_arrays(world_size):
    check_world(world_size, big=True, env={"RINGRT_ALGO": "reduce=ring",
                                           "RINGRT_SEGMENT_BYTES": "65536"})


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world_size", [3])
def test_latency_algorithms_on_big_arrays(world_size):
    check_world(world_size, big=True, env=SMALL_ALGOS)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world_size", [3, 4])
def test_shared_memory_with_many_pieces(world_size):
    check_world(world_size, big=True, env={"RINGRT_SHM_SLOT_BYTES": str(64 * 1024)})


@pytest.mark.timeout(200)
def test_every_collective_over_tcp():
    check_world(3, big=True, tcp=True)


@pytest.mark.timeout(60)
def test_async_ops_complete_in_call_order():
    world = run_world("tests.dist.workers:async_and_order", 3, timeout=45)
    arrays = [np.full(1000 * (i + 1), sum(r + i for r in range(3)), np.float64) for i in range(6)]
    for rank in range(3):
        got = world[rank].arrays
        np.testing.assert_array_equal(got["arrays"], np.concatenate(arrays))
        np.testing.assert_array_equal(got["bcast"], np.zeros(10, np.int32))
        np.testing.assert_array_equal(got["big"], np.arange(400_000, dtype=np.float32) * 6)


@pytest.mark.timeout(60)
def test_subgroup_of_ranks_1_and_3():
    world = run_world("tests.dist.workers:subgroups", 4, timeout=45)
    for rank in range(4):
        got = {**world[rank].arrays, **world[rank].values}
        member = rank in (1, 3)
        assert got["group_rank"] == ([1, 3].index(rank) if member else -1)
        assert got["group_size"] == (2 if member else -1)
        assert got["returned_none"]
        np.testing.assert_array_equal(got["x"], np.full(5, 4.0 if member else float(rank)))
        np.testing.assert_array_equal(got["w"], np.full(3, 6.0))
        np.testing.assert_array_equal(got["y"], np.full(70_000, 4.0 if member else rank,
                                                        np.float32))
        np.testing.assert_array_equal(got["e"], np.full(2, 2 if rank in (0, 2) else rank))
        assert got["objs"] == ([1, 3] if member else [None, None])


@pytest.mark.timeout(60)
def test_groups_formed_by_their_members_alone():
    world = run_world("tests.dist.workers:member_groups", 4, timeout=45)
    sums = {"odd": 2.0 + 4.0, "low": 1.0 + 2.0 + 3.0}
    for rank in range(4):
        got = {**world[rank].arrays, **world[rank].values}
        assert got["ids_distinct"]
        for name, members in (("odd", [1, 3]), ("low", [0, 1, 2])):
            if rank in members:
                np.testing.assert_array_equal(got[name], np.full(5, sums[name], np.float32))
                assert got[name + "_id"][0] == world[members[0]].arrays[name + "_id"][0]
            else:
                assert name not in got


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("p2p", ["auto", "sockets"])
def test_send_recv_tags_and_any_source(world_size, p2p):
    world = run_world("tests.dist.workers:point_to_point", world_size, timeout=45,
                      env={"RINGRT_P2P": p2p})
    for rank in range(world_size):
        left = (rank - 1) % world_size
        got = {**world[rank].arrays, **world[rank].values}
        np.testing.assert_array_equal(got["got_small"], np.full(3, left, np.int32))
        np.testing.assert_array_equal(got["got_big"],
                                      np.arange(300_000, dtype=np.float32) + left)
        assert got["sender"] == left and got["irecv_sender"] == left
        assert got["any_source"] == (list(range(1, world_size)) if rank == 0 else [])


@pytest.mark.timeout(60)
def test_object_collectives():
    world = run_world("tests.dist.workers:objects", 3, timeout=45)
    for rank in range(3):
        got = world[rank].values
        assert got["gathered_ok"]
        assert got["items"] == repr([{"from": 0}, (1, 2), None])
        assert got["collected"] == ([0, 10, 20] if rank == 2 else None)
        assert got["scattered"] == f"to {rank}"
        assert "cannot be sent" in got["rejected"] and "pickle" in got["rejected"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("p2p", ["auto", "sockets"])
def test_last_messages_survive_the_sender_leaving(p2p):
    world = run_world("tests.dist.workers:last_message", 2, timeout=45, env={"RINGRT_P2P": p2p})
    assert world[0].values["ok"]
    assert world[0].values["path"] == ("shm" if p2p == "auto" else "sockets")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("algorithm", ["shm", "ring", "direct"])
def test_all_gather_into_tensor_in_place(algorithm):
    world = run_world("tests.dist.workers:all_gather_in_place", 3, timeout=60,
                      env={"RINGRT_ALGO": f"all_gather={algorithm}"})
    for count in (1, 1000, 300_001):
        want = np.concatenate([np.arange(count, dtype=np.float32) + 1000 * r for r in range(3)])
        for rank in range(3):
            np.testing.assert_array_equal(world[rank].arrays[f"n{count}"], want)
