"""How a torch job finds its peers on "ringrt": torchrun, a TCPStore (tcp://), file://,
env:// under ringrun through ringrt's token-checked store (tests/torch/rendezvous_workers.py)."""

import os
import shutil

import pytest

from tests.world import run_world, short_tmpdir


@pytest.mark.timeout(90)
def test_torchrun_standalone():
    world = run_world("tests.torch.rendezvous_workers:under_torchrun", 1, timeout=75,
                      args={"nproc": 2})
    got = world[0].values
    assert got["returncode"] == 0, got["stderr"]
    results = sorted(got["results"], key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1]
    for r in results:
        assert r["world"] == 2 and r["total"] == [3.0] * 4 and r["pair"] == [1.0, 1.0]
        assert r["grad"] == results[0]["grad"]               # DDP averaged the gradients
        assert r["store"] == "TCPStore" and r["agent_store"] == "True"


@pytest.mark.timeout(60)
def test_a_tcp_store_handed_to_init_process_group():
    world = run_world("tests.torch.rendezvous_workers:through_a_tcp_store", 3, timeout=45)
    for rank in range(3):
        assert world[rank].values["total"] == [6.0] * 3
        if rank in (1, 2):
            assert world[rank].values["pair"] == [3.0, 3.0]


@pytest.mark.timeout(60)
def test_a_file_init_method():
    directory = short_tmpdir("rrf-")
    try:
        world = run_world("tests.torch.rendezvous_workers:through_a_file", 2, timeout=45,
                          args={"path": os.path.join(directory, "store")})
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for rank in range(2):
        assert world[rank].values == {"total": [3.0] * 3, "pair": [2.0, 2.0]}


@pytest.mark.timeout(60)
def test_env_under_ringrun_goes_through_ringrts_store_for_every_group():
    world = run_world("tests.torch.rendezvous_workers:env_through_ringrt_store", 2, timeout=45)
    for rank in range(2):
        got = world[rank].values
        assert got["ringrt_store"], got["store"]
        assert got["backend"] == "ringrt" and got["gloo_sum"] == [2.0, 2.0]
        assert got["second_init"] == [1.0, 1.0]
        assert got["under_gloo"] == [[3.0, 3.0], "ringrt"]


@pytest.mark.timeout(60)
def test_a_wrong_token_is_refused_and_named():
    world = run_world("tests.torch.rendezvous_workers:wrong_token", 2, timeout=45,
                      per_rank_env={1: {"RINGRT_TOKEN": "not-the-job-token"}})
    refused = world[1].values
    assert refused["error"] == "AuthenticationError" and "RINGRT_TOKEN" in refused["message"]
    waiting = world[0].values
    assert waiting["error"] == "TimeoutError" and "rank 1" in waiting["message"], waiting
    assert waiting["took"] < 10
