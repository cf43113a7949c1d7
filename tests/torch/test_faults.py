"""Never hang, always say why -- through torch: bad input is refused on the rank that made
it (and nothing else happens), mismatches and timeouts raise ringrt's named errors from the
torch call, and a peer lost during DDP's backward makes ``loss.backward()`` fail quoting
``PeerLostError`` within seconds (tests/torch/fault_workers.py)."""

import pytest

from tests.world import run_world

BAD_INPUT = {
    "not_cpu": ("TypeError", "CPU tensors only"),
    "not_contiguous": ("ValueError", "contiguous"),
    "sparse": ("TypeError", "dense tensors only"),
    "dtype": ("TypeError", "float8_e4m3fn"),
    "avg_on_ints": ("ValueError", "floating dtype"),
    "list_length": ("ValueError", "one tensor per rank"),
    "list_dtype": ("ValueError", "different dtypes"),         # torch's own check, before us
    "output_size": ("ValueError", "expected torch.float32 with 12"),
    "async_bad": ("ValueError", "contiguous"),
    "split_sizes": ("ValueError", "split sizes"),
}


@pytest.mark.timeout(90)
def test_bad_input_is_refused_locally_and_the_corrected_call_carries_on():
    world = run_world("tests.torch.fault_workers:bad_input", 3, timeout=75)
    for name, (error, text) in BAD_INPUT.items():
        kind, message, _ = world[1].values[name]
        assert kind == error and text in message, (name, kind, message)
        if name != "list_dtype":
            assert "rank 1" in message, (name, message)
        for rank in range(3):
            kind, message, took = world[rank].values[name + "/retry"]
            assert kind == "ok" and took < 10, (name, rank, kind, message)
            assert world[rank].values[name + "/after"] == [3.0, 3.0, 3.0], name


@pytest.mark.timeout(90)
def test_mismatches_raise_the_named_error_on_every_rank():
    world = run_world("tests.torch.fault_workers:mismatch", 3, timeout=75)
    for kind in ("count", "dtype", "op", "async"):
        for rank in range(3):
            got = world[rank].values
            for outcome in (got[kind], got[kind + "/follow_up"]):
                assert outcome[0] == "CollectiveMismatchError", (kind, rank, outcome)
                assert "op #0" in outcome[1] and outcome[2] < 10, (kind, rank, outcome)
            assert 1 in got[kind + "/named"], (kind, rank, got[kind + "/named"])
    assert "bfloat16" in world[0].values["dtype"][1] and "int16" in world[0].values["dtype"][1]


@pytest.mark.timeout(60)
def test_timeouts_raise_the_named_error_from_the_call_the_work_and_the_future():
    world = run_world("tests.torch.fault_workers:timeouts", 2, timeout=45)
    got = world[0].values
    for key in ("work", "sync"):
        kind, message, took = got[key]
        assert kind == "TimeoutError" and "all_reduce (op #0)" in message, (key, message)
        assert "rank 1" in message and 1.5 < took < 6, (key, message, took)
    kind, message, _ = got["future"]          # torch futures can only quote the error
    assert kind == "RuntimeError" and "TimeoutError: all_reduce (op #0)" in message, message
    assert got["completed"] and got["exception"] == "TimeoutError"
    assert got["again"] == ["TimeoutError", [1], True]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["kill", "exception"])
def test_a_peer_lost_during_backward_fails_loss_backward_within_seconds(how):
    world = run_world("tests.torch.fault_workers:peer_lost_in_backward", 3, timeout=45,
                      args={"how": how}, expect_success=False)
    assert world[2].returncode != 0
    for rank in (0, 1):
        assert world[rank].returncode == 0, world.report()
        kind, message, took = world[rank].values["backward"]
        # PeerLostError itself if the loss was known when DDP started the all_reduce, else
        # the RuntimeError of DDP's failed future, quoting it
        assert kind in ("PeerLostError", "RuntimeError") and "PeerLostError" in \
            f"{kind}: {message}" and "rank 2 lost" in message, (rank, kind, message)
        assert took < 8, f"rank {rank} took {took:.1f} s to notice"
        if how == "exception":
            assert "boom on purpose" in message, message
        for later in ("following", "waited"):
            kind, message, took = world[rank].values[later]
            assert kind == "PeerLostError" and took < 1, (later, kind, message)
