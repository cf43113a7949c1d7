"""torch.distributed over the "ringrt" backend across 3 lab hosts (2 ranks each): collectives,
a subgroup spanning hosts, and torch DDP equal to one process; ipc between a host's ranks,
CurveZMQ-secured tcp between hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netlab._lab import NPROC, WORLD, ended_job_results, outputs, wait_jobs

pytest.importorskip("torch")
WORKER = Path(__file__).with_name("torch_worker.py")


@pytest.mark.timeout(150)
def test_torch_ddp_and_collectives_across_three_hosts(lab, outdir):
    jobs = lab.ringrun_everywhere(WORKER, outdir, NPROC, timeout=100, op_timeout=60)
    codes = wait_jobs(jobs, 110)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{outputs(jobs)}"
    results = ended_job_results(jobs, outdir)
    for rank, result in results.items():
        assert result["failures"] == [], f"rank {rank}: {result['failures']}"
        assert result["tcp_mechanism"] == "curve"
        want = {str(p): "ipc" if p // NPROC == rank // NPROC else "tcp"
                for p in range(WORLD) if p != rank}
        assert result["routes"] == want
