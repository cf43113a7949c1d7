"""Two-level collectives across lab hosts: 3 hosts x 2 ranks (ringrun), the ranks claiming
hosts of 2, 1 and 3 ranks (RINGRT_HOST_ID: rank 3 runs on the second lab host but joins the
third's shared-memory arena and ipc sockets, which work across network namespaces), so the
layout is uneven. Every collective forced two-level and forced flat against NumPy (bit for
bit: small-integer inputs), and a subgroup spanning hosts. The even 3 x 2 layout runs
two-level by default in test_multihost.py's table.
"""

from __future__ import annotations

import pytest

from tests.netlab._lab import NPROC, WORKER, WORLD, ended_job_results, outputs, wait_jobs

LAYOUT = (2, 1, 3)


@pytest.mark.timeout(100)
def test_every_collective_two_level_on_uneven_hosts(lab, outdir):
    jobs = lab.ringrun_everywhere(WORKER, outdir, NPROC,
                                  ["hierarchical", "--layout", ",".join(map(str, LAYOUT))],
                                  timeout=70, op_timeout=25)
    codes = wait_jobs(jobs, 80)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{outputs(jobs)}"
    results = ended_job_results(jobs, outdir)
    hosts = [h for h, n in enumerate(LAYOUT) for _ in range(n)]
    for rank, result in results.items():
        assert result["cases"] > 0
        assert not result["failures"], f"rank {rank}: wrong: {result['failures'][:20]}"
        assert result["host_arena"] == (LAYOUT[hosts[rank]] > 1), rank
        for peer, route in result["routes"].items():
            assert route == ("ipc" if hosts[int(peer)] == hosts[rank] else "tcp"), (rank, peer)
    chosen = results[0]["algorithms"]
    for op in ("all_reduce", "broadcast", "reduce", "all_gather", "barrier"):
        assert chosen.get(f"{op}/hierarchical"), (op, chosen)
    assert chosen.get("all_reduce/ring"), "the flat half of the run did not run flat"
    assert len(results) == WORLD
