"""One round of the chaos soak (``benchmarks/chaos.py``, docs/chaos.md) on 4 netlab hosts:
elastic NumPy DDP under 1-3 seeded faults at once, then every invariant (no hang, each sample
once, parameters equal to a replay of the schedule, nothing left on any host). ``make chaos``
runs the long soak; this is its smallest run. Skips where netlab cannot run (needs root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.netlab._lab import NETLAB, REPO, LabUnavailable, check_usable

PREFIX = "rrx"                  # not the soak's "rrc": `make chaos` may run beside make test


@pytest.mark.timeout(400)
def test_one_chaos_round_keeps_every_invariant(tmp_path):
    try:
        check_usable()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    out = tmp_path / "chaos.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.chaos", "--rounds", "1",
                           "--minutes", "1", "--seed", "7", "--prefix", PREFIX, "--out", str(out)],
                          cwd=REPO, env=dict(os.environ, NETLAB=str(NETLAB)), text=True,
                          capture_output=True, timeout=360, check=False)
    assert out.exists(), proc.stdout + proc.stderr
    record = json.loads(out.read_text())
    assert record["summary"]["rounds"] == 1
    assert record["summary"]["faults_injected"] >= 1, record["rounds"]
    assert [r["problems"] for r in record["rounds"]] == [[]], proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
