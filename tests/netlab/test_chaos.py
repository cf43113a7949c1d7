"""One round of the chaos soak (``benchmarks/robustness/chaos.py``, docs/chaos.md) on 4
netlab hosts: elastic NumPy DDP under 1-3 seeded faults at once, then every invariant (no hang,
each sample once, parameters equal to a replay of the schedule, nothing left on any host).
``make chaos`` runs the long soak; this is its smallest run. Skips where netlab cannot run
(needs root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.netlab._lab import NETLAB, REPO, LabUnavailable, check_usable, netlab

PREFIX = "rrx"                  # not the soak's "rrc": `make chaos` may run beside make test


@pytest.mark.timeout(400)
def test_one_chaos_round_keeps_every_invariant(tmp_path):
    try:
        check_usable()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    out = tmp_path / "chaos.json"
    log = tmp_path / "chaos.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.robustness.chaos",
                                 "--rounds", "1", "--minutes", "1", "--seed", "7",
                                 "--prefix", PREFIX, "--out", str(out)],
                                cwd=REPO, env=dict(os.environ, NETLAB=str(NETLAB)),
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        proc.wait(timeout=360)
    finally:                              # a soak past its bound: its tree and its lab go
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            netlab("down", "--prefix", PREFIX, check=False)
    output = log.read_text()
    assert out.exists(), output
    record = json.loads(out.read_text())
    assert record["summary"]["rounds"] == 1
    assert record["summary"]["faults_injected"] >= 1, record["rounds"]
    assert [r["problems"] for r in record["rounds"]] == [[]], output
    assert proc.returncode == 0, output
