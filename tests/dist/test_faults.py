"""Never hang, always say why: bad input, mismatches, lost peers, timeouts, wrong token."""

import pytest

from tests.world import run_world

BAD_INPUT_ERRORS = {
    "not_contiguous": ("ValueError", "C-contiguous"),
    "read_only": ("ValueError", "read-only"),
    "object_dtype": ("TypeError", "dtype object"),
    "not_an_array": ("TypeError", "numpy.ndarray"),
    "wrong_list_length": ("ValueError", "one array per rank"),
    "root_out_of_range": ("ValueError", "not a rank of this group"),
    "avg_on_ints": ("ValueError", "floating dtype"),
    "shape_mismatch": ("ValueError", "world_size"),
    "not_serialisable": ("TypeError", "cannot be sent"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_bad_input_is_local_and_a_corrected_call_carries_on(world_size):
    world = run_world("tests.dist.fault_workers:bad_input", world_size, timeout=75)
    for name, (error, text) in BAD_INPUT_ERRORS.items():
        kind, message, _ = world[1].values[name]
        assert kind == error and text in message and "rank 1" in message, (name, message)
        for rank in range(world_size):
            kind, message, took = world[rank].values[name + "/retry"]
            assert kind == "ok", (name, rank, kind, message)
            assert took < 10, (name, rank, took)
            assert world[rank].values[name + "/after"] == sum(range(world_size)), name


@pytest.mark.timeout(60)
def test_bad_input_caught_then_a_different_op_is_a_mismatch():
    world = run_world("tests.dist.fault_workers:bad_input_then_other_op", 3, timeout=40)
    for rank in range(3):
        outcome, follow_up = world[rank].values["outcome"], world[rank].values["follow_up"]
        raised = outcome if outcome[0] != "ok" else follow_up     # a broadcast root only sends
        assert raised[0] == "CollectiveMismatchError" and "op #0" in raised[1], (rank, raised)
        assert raised[2] < 10, raised


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 4])
def test_uncaught_bad_input_fails_the_others_fast_naming_it(world_size):
    world = run_world("tests.dist.fault_workers:bad_input_uncaught", world_size, timeout=40,
                      expect_success=False)
    assert world[1].returncode != 0 and "C-contiguous" in world[1].stderr
    for rank in set(range(world_size)) - {1}:
        assert world[rank].returncode == 0, world.report()
        kind, message, took = world[rank].values["pending"]
        assert kind == "PeerLostError" and "rank 1" in message, message
        assert "ValueError" in message and "C-contiguous" in message, message
        assert took < 8, f"took {took:.1f} s to notice"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["op", "dtype", "count", "big_count", "root", "redop",
                                  "uneven"])
def test_mismatched_calls_raise_on_every_rank(kind):
    world = run_world("tests.dist.fault_workers:mismatch", 3, timeout=40, args={"kind": kind})
    for rank in range(3):
        first, follow_up = world[rank].values["first"], world[rank].values["follow_up"]
        # Detected in the op itself from the headers, or - when a rank's part of the op
        # completes (a root only sends) - at its next collective, from the leftovers.
        raised = first if first[0] != "ok" else follow_up
        assert raised[0] == "CollectiveMismatchError", (rank, first, follow_up)
        assert "op #0" in raised[1] and "rank" in raised[1], raised[1]
        assert raised[2] < 10, raised
        assert follow_up[0] == "CollectiveMismatchError", follow_up


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["kill", "exception"])
def test_lost_peer_is_reported_within_seconds(how):
    world = run_world("tests.dist.fault_workers:lose_a_peer", 3, timeout=40,
                      args={"how": how}, expect_success=False)
    assert world[2].returncode != 0
    for rank in (0, 1):
        assert world[rank].returncode == 0, world.report()
        pending, following = world[rank].values["pending"], world[rank].values["following"]
        assert pending[0] == "PeerLostError" and "rank 2" in pending[1], pending
        assert pending[2] < 8, f"took {pending[2]:.1f} s to notice"
        if how == "exception":
            assert "boom on purpose" in pending[1], pending[1]
        assert following[0] == "PeerLostError" and following[2] < 1, following


@pytest.mark.timeout(30)
def test_peer_that_never_arrives_times_out_naming_it():
    world = run_world("tests.dist.fault_workers:never_arrives", 3, timeout=20, ranks=[0, 1])
    for rank in (0, 1):
        got = world[rank].values
        assert got["error"] == "TimeoutError" and got["builtin"], got
        assert got["ranks"] == [2] and "rendezvous" in got["message"], got
        assert got["took"] < 8


@pytest.mark.timeout(30)
def test_op_timeout_names_op_sequence_and_silent_rank():
    world = run_world("tests.dist.fault_workers:op_timeout", 2, timeout=25)
    kind, message, took = world[0].values["result"]
    assert kind == "TimeoutError", message
    assert "all_reduce (op #0)" in message and "rank 1" in message, message
    assert 1.5 < took < 6
    assert world[0].values["again"] == ["TimeoutError", [1]]


@pytest.mark.timeout(30)
def test_wrong_token_is_refused_with_a_clear_error():
    world = run_world("tests.dist.fault_workers:wrong_token", 2, timeout=25,
                      per_rank_env={1: {"RINGRT_TOKEN": "not-the-job-token"}})
    kind, message, _ = world[1].values["outcome"]
    assert kind == "AuthenticationError" and "RINGRT_TOKEN" in message, message
    kind, message, _ = world[0].values["outcome"]
    assert kind == "TimeoutError" and "rank 1" in message, message
