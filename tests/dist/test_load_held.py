"""Load held: a few thousand ops of every kind leave a rank's memory, descriptors,
threads and shared memory flat (``make soak-load`` runs 100,000 per kind and prints the
figures). The check is shown to catch a real leak of 1 KiB per op in the same loop, so a
flat verdict is not an accident of the check."""

from __future__ import annotations

import pytest

from benchmarks.robustness import soak_load
from tests.world import run_world

OPS = 2000


def _verdicts(api: str, ops: int = OPS, **args) -> dict:
    world = run_world("tests.dist.load_workers:soak", 2, timeout=120,
                      args={"api": api, "ops": ops, **args})
    return soak_load.judge([world[r].values["results"] for r in range(2)], ops)


def _explain(table: dict) -> str:
    return "\n".join(f"{kind}: {why}" for kind, row in table.items()
                     for rank in row["ranks"] for why in rank["why"])


@pytest.mark.timeout(150)
def test_numpy_api_ops_leave_resources_flat():
    table = _verdicts("numpy")
    assert set(table) == set(soak_load.NUMPY_KINDS)
    assert all(row["correct"] for row in table.values()), table
    assert all(row["flat"] for row in table.values()), _explain(table)


@pytest.mark.timeout(150)
def test_torch_backend_ops_leave_resources_flat():
    pytest.importorskip("torch")
    table = _verdicts("torch", ops=1500)         # torch's import alone costs a few seconds
    assert set(table) == set(soak_load.TORCH_KINDS)
    assert all(row["correct"] for row in table.values()), table
    assert all(row["flat"] for row in table.values()), _explain(table)


@pytest.mark.timeout(150)
def test_the_check_catches_a_leak_of_1_kib_per_op():
    table = _verdicts("numpy", kinds=["all_reduce/small"], leak_bytes=1024)
    row = table["all_reduce/small"]
    assert row["correct"] and not row["flat"]
    assert all(any("RSS trends up" in why for why in rank["why"]) for rank in row["ranks"])


def _samples(**moving) -> list[dict]:
    base = {"rss": 50 << 20, "fds": 33, "threads": 7, "shm_bytes": 32 << 20, "shm_files": 0}
    return [{"op": op, **base, **{k: f(op) for k, f in moving.items()}}
            for op in range(40, 2001, 40)]


def test_the_check_judges_each_resource():
    assert soak_load.flatness(_samples(), 2000)["flat"]
    noisy = soak_load.flatness(_samples(rss=lambda op: (50 << 20) + (op % 3) * 200_000), 2000)
    assert noisy["flat"], noisy                          # allocator noise, no trend
    for name, moving in [("fds", lambda op: 33 + op // 1000),
                         ("threads", lambda op: 7 + op // 1500),
                         ("shm_bytes", lambda op: (32 << 20) + (op // 1000) * 4096),
                         ("rss", lambda op: (50 << 20) + op * 700)]:
        verdict = soak_load.flatness(_samples(**{name: moving}), 2000)
        assert not verdict["flat"] and name.split("_")[0] in " ".join(verdict["why"]).lower(), \
            (name, verdict)
    late_jump = soak_load.flatness(_samples(rss=lambda op: (50 << 20) + (op > 1800) * (2 << 20)),
                                   2000)
    assert not late_jump["flat"] and "new high" in " ".join(late_jump["why"])
    assert not soak_load.flatness(_samples()[:10], 2000)["flat"]     # too few samples
