"""A host's link is cut during an all_reduce loop: every rank on the other hosts raises
PeerLostError naming the cut host's ranks within seconds (heartbeat timeout 5 s), the cut
host's own ranks fail the same way, every ringrun exits non-zero and no worker survives.

The cut happens only once every rank has finished an all_reduce (``ready{R}`` files), never
after a sleep. Cutting host 0 also takes away the rendezvous store (its ringrun hosts it).
"""

from __future__ import annotations

import time

import pytest

from tests.netlab._lab import (
    NPROC,
    WORKER,
    WORLD,
    ended_job_results,
    outputs,
    wait_for_files,
    wait_jobs,
)

HEARTBEAT_TIMEOUT = 5.0            # ringrt's default RINGRT_HEARTBEAT_TIMEOUT
DETECTION_LIMIT = 15.0             # heartbeat timeout + generous slack for a loaded 2-core box


@pytest.mark.timeout(100)
@pytest.mark.parametrize("host_index, mode", [(2, "link"), (0, "drop")],
                         ids=["cut-host2-link-down", "cut-host0-store-host-drop"])
def test_cut_host_is_reported_lost_everywhere(lab, outdir, host_index, mode):
    jobs = lab.ringrun_everywhere(WORKER, outdir, NPROC, ["loop", "--op-timeout", "40"],
                                  timeout=60, op_timeout=40)
    cut_host = lab.names[host_index]
    cut_ranks = set(range(host_index * NPROC, (host_index + 1) * NPROC))
    try:
        ready = wait_for_files([outdir / f"ready{r}" for r in range(WORLD)], 30, jobs)
        assert ready, f"the ranks never all finished an all_reduce\n{outputs(jobs)}"
        cut_at = time.monotonic()
        lab.cut(cut_host, mode)
        codes = wait_jobs(jobs, 45)
    finally:
        lab.heal(cut_host)
    ended = time.monotonic() - cut_at
    assert all(code not in (0, None) for code in codes.values()), \
        f"exit codes {codes}\n{outputs(jobs)}"
    results = ended_job_results(jobs, outdir)
    for rank, result in results.items():
        lost_side = cut_ranks if rank not in cut_ranks else set(range(WORLD)) - cut_ranks
        detected = result["at"] - cut_at
        assert result["error"] == "PeerLostError", (rank, result)
        assert result["ranks"] and set(result["ranks"]) <= lost_side, (rank, result)
        assert HEARTBEAT_TIMEOUT * 0.5 < detected < DETECTION_LIMIT, (rank, detected, result)
    survivors = [r for r in results if r not in cut_ranks]
    print(f"cut {cut_host} ({mode}): survivors raised after "
          f"{[round(results[r]['at'] - cut_at, 2) for r in survivors]} s naming "
          f"{[results[r]['ranks'] for r in survivors]}; every ringrun exited within "
          f"{ended:.1f} s, codes {codes}")
