"""examples/train.py across 3 lab hosts x 2 ranks: DiLoCo between hosts with DDP inside each
(``--sync-every``: the groups come from the real host layout, the pseudo-gradient crosses in
shares, as bf16), and synchronous DDP with PowerSGD across hosts. Each run must finish on
every host and learn the digits; the arithmetic itself is checked against NumPy simulations
in tests/train/test_localsgd.py (hosts made with RINGRT_HOST_ID there)."""

from __future__ import annotations

import re

import pytest

from tests.netlab._lab import NPROC, REPO, outputs, wait_jobs

TRAIN = REPO / "examples" / "train.py"
# bf16 DDP across hosts takes the same path (shares, then an all-gather in the host) as
# DiLoCo's bf16 pseudo-gradients, so it is covered by the first mode.
MODES = {"diloco": ["--sync-every", "4", "--fragments", "2", "--outer-compress", "bf16"],
         "powersgd": ["--compress", "powersgd"]}


@pytest.mark.timeout(100)
@pytest.mark.parametrize("mode", list(MODES))
def test_train_across_hosts(lab, outdir, mode):
    args = ["--epochs", "3", "--batch-size", "48", *MODES[mode]]
    jobs = lab.ringrun_everywhere(TRAIN, outdir, NPROC, args, timeout=75, op_timeout=20)
    codes = wait_jobs(jobs, 85)
    text = outputs(jobs)
    assert all(code == 0 for code in codes.values()), f"exit codes {codes}\n{text}"
    if mode == "diloco":
        assert "DiLoCo (H=4, scope auto" in text
    found = re.search(r"final test accuracy ([\d.]+)%", text)
    assert found and float(found.group(1)) > 80, text
