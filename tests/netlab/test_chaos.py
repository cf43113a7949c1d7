"""A round of the chaos soak (``benchmarks/robustness/chaos.py``, docs/chaos.md) on 4 netlab
hosts: elastic NumPy DDP under seeded faults at once, a slow checkpoint disk among them, then
every invariant (no hang, each sample once, parameters equal to a replay of the schedule,
nothing left on any host, the disk's loop device, mount and cgroup gone). A host lost for
good (``cut_for_good``) costs a round over a minute (the cut host's ringrun waits for the
store it cannot reach), too long for ``make test``: the soak runs it, and the unit tests
cover its plumbing. ``make chaos`` runs the long soak; this
is its smallest run. Skip where netlab cannot run (needs root)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.robustness import _chaos_disk
from tests.netlab._lab import NETLAB, REPO, LabUnavailable, check_usable, netlab

PREFIX = "rrx"                  # not the soak's "rrc": `make chaos` may run beside make test


def run_soak(tmp_path, *options: str) -> tuple[dict, str]:
    """One round of the soak with ``options``; (its record, its output)."""
    try:
        check_usable()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    out = tmp_path / "chaos.json"
    log = tmp_path / "chaos.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.robustness.chaos",
                                 "--rounds", "1", "--minutes", "1", *options,
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
    assert [r["problems"] for r in record["rounds"]] == [[]], output
    assert proc.returncode == 0, output
    return record, output


@pytest.mark.timeout(400)
def test_one_chaos_round_keeps_every_invariant_and_undoes_its_slow_disk(tmp_path):
    """Seed 2's round draws three faults at once: a slow checkpoint disk, a cut link and a
    full checkpoint disk (where no throttled disk can be made, the soak leaves that kind out
    and draws others)."""
    record, _ = run_soak(tmp_path, "--seed", "2")
    faults = record["rounds"][0]["faults"]
    assert len(faults) >= 1 and all(f["injected"] for f in faults), faults
    if not _chaos_disk.unavailable():
        assert "slow_ckpt" in [f["kind"] for f in faults], faults
    mark = f"{PREFIX}-chaos-"
    assert [m for m in Path("/proc/self/mounts").read_text().splitlines() if mark in m] == []
    if _chaos_disk.BLKIO.exists():
        assert [c.name for c in _chaos_disk.BLKIO.iterdir() if c.name.startswith(mark)] == []
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, timeout=30)
    assert mark not in loops.stdout
