"""torch's DDP comm hooks (bf16, PowerSGD) over "ringrt" across 3 lab hosts against gloo in
the same job, and two-level DiLoCo (DDP inside each host, DiLoCo across hosts: each of a
host's 2 ranks carries half the pseudo-gradient) against a one-process simulation
(tests/torch/localsgd_workers.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.netlab._lab import NPROC, WORLD, outputs, wait_all_dead, wait_jobs, worker_pids

pytest.importorskip("torch")
WORKER = Path(__file__).with_name("torch_localsgd_worker.py")
# At world 6 ringrt's two-level sums and gloo's ring add in different orders: bf16 buckets
# round differently (one bf16 ulp of a gradient, ~4e-3 relative, through 8 SGD steps at lr
# 0.1); PowerSGD's float32 P and Q differ by rounding, which its orthogonalisation keeps small.
HOOK_TOLERANCE = {"bf16": 5e-3, "powersgd": 1e-4}


@pytest.mark.timeout(150)
def test_torch_hooks_and_two_level_diloco_across_three_hosts(lab, outdir):
    jobs = lab.ringrun_everywhere(WORKER, outdir, NPROC, timeout=110, op_timeout=60)
    codes = wait_jobs(jobs, 120)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{outputs(jobs)}"
    assert not wait_all_dead(worker_pids(outdir).values(), 5), "workers left running"
    results = {r: dict(np.load(outdir / f"rank{r}.npz")) for r in range(WORLD)}
    for hook, tolerance in HOOK_TOLERANCE.items():
        for rank, got in results.items():
            assert got[f"ringrt/{hook}"].tobytes() == results[0][f"ringrt/{hook}"].tobytes()
            gap = np.abs(got[f"ringrt/{hook}"] - got[f"gloo/{hook}"]).max()
            assert gap <= tolerance, (hook, rank, gap)
    for rank, got in results.items():
        want = results[0][f"reference/{rank // NPROC}"]
        assert np.abs(got["two_level"] - want).max() <= 1e-5, rank
