"""Subgroups of a job across 2 lab hosts x 2 ranks: a group inside one host, one spanning
both hosts with two members on each, one with a member on each; every collective through the
NumPy API and through torch's ``new_group(backend="ringrt")`` against NumPy, and
``ringrt.stats()`` showing where shared memory ran:

- the one-host groups run every op over their own arena (``op/shm``);
- the spanning group's ops go in two levels (``hierarchical``), and its same-host members
  made an arena at creation and grew its slot while running them (a slot grows only inside
  a shared-memory step: ``shm_groups.mapped_bytes``);
- the group with one member per host makes no arena and runs no shared-memory op.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ringrt._comm.shm import CONTROL_BYTES
from tests.netlab._lab import ended_job_results, outputs, wait_jobs
from tests.netlab.groups_worker import (
    GROUPS,
    SETTINGS,
    SIZES,
    block,
    root_of,
    uneven_count,
)

WORKER = Path(__file__).with_name("groups_worker.py")
NPROC, NHOSTS = 2, 2
WORLD = NPROC * NHOSTS
SHM_OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all", "barrier")
TWO_LEVEL_OPS = ("all_reduce", "all_gather", "broadcast", "barrier")


def host_of(rank: int) -> int:
    return rank // NPROC


def expected(label: str, members: list[int], rank: int, size: int) -> dict[str, np.ndarray]:
    """What group member ``rank`` must hold after run_ops, from NumPy on every member's
    regenerated inputs."""
    me, n = members.index(rank), len(members)
    root = root_of(members)
    return {
        "all_reduce": np.sum([block(label, q, 0, size) for q in range(n)], axis=0),
        "reduce_scatter": np.sum([block(label, q, me, size) for q in range(n)], axis=0),
        "all_gather": np.stack([block(label, q, q, size) for q in range(n)]),
        "broadcast": block(label, root, root, size),
        "all_to_all_uneven": np.concatenate([block(label, q, me, uneven_count(q, me, size))
                                             for q in range(n)]),
        "barrier": np.array([n]),
    }


def wrong_results(rank: int, got) -> list[str]:
    wrong = []
    for label, members in GROUPS.items():
        if rank not in members:
            continue
        for setting in SETTINGS:
            for size in SIZES:
                for op, want in expected(label, members, rank, size).items():
                    key = f"{label}/{setting}/{size}/{op}"
                    if key not in got or not np.array_equal(got[key], want):
                        wrong.append(key)
    return wrong


def assert_shared_memory_where_expected(rank: int, record: dict) -> None:
    created, ran = record["created"], record["ran"]
    calls = len(SETTINGS) * len(SIZES)                # of each op, per group
    pair = f"host{host_of(rank)}"
    for label, members in GROUPS.items():
        partners = [m for m in members if host_of(m) == host_of(rank)]
        arena = rank in members and len(partners) >= 2
        assert created[label]["shm_groups"] == {
            "arenas": int(arena), "mapped_bytes": len(partners) * CONTROL_BYTES * arena}, \
            (rank, label, created[label])
    one_host = ran["host0+host1"]
    assert one_host["algorithms"] == {f"{op}/shm": calls for op in SHM_OPS}, (rank, one_host)
    assert one_host["shm_groups"]["mapped_bytes"] > 0, (rank, pair, one_host)
    span = ran["span"]
    for op in TWO_LEVEL_OPS:          # forced in half the calls; the model may pick it too
        assert span["algorithms"].get(f"{op}/hierarchical", 0) >= calls // 2, (rank, op, span)
    assert not [name for name in span["algorithms"] if name.endswith("/shm")], (rank, span)
    assert span["shm_groups"]["mapped_bytes"] > 0, \
        f"rank {rank}: the spanning group's arena never grew: its two-level ops did not " \
        f"stage data in shared memory inside the host ({span})"
    cross = ran["cross"]
    assert cross["shm_groups"]["mapped_bytes"] == 0, (rank, cross)
    assert not [name for name in cross["algorithms"]
                if name.endswith(("/shm", "/hierarchical"))], (rank, cross)
    if rank in GROUPS["cross"]:
        assert sum(cross["algorithms"].values()) == len(SHM_OPS) * calls, (rank, cross)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("api", ["numpy", "torch"])
def test_groups_inside_one_host_spanning_hosts_and_one_member_per_host(lab, outdir, api):
    if api == "torch":
        pytest.importorskip("torch")
    jobs = lab.ringrun_everywhere(WORKER, outdir, NPROC, [api] if api == "torch" else [],
                                  hosts=lab.names[:NHOSTS], timeout=60, op_timeout=20)
    codes = wait_jobs(jobs, 70)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{outputs(jobs)}"
    results = ended_job_results(jobs, outdir, world=WORLD)
    for rank in range(WORLD):
        with np.load(outdir / f"rank{rank}.npz") as got:
            assert wrong_results(rank, got) == [], f"rank {rank}"
        assert_shared_memory_where_expected(rank, results[rank])
