"""Elastic membership on netlab: 4 hosts x 1 rank, ``ringrun --nnodes 2:4``.

examples/train.py --elastic trains on 4 hosts; once it is past a checkpoint, host 3's link is
cut: the other three restart at world size 3 from the last checkpoint within seconds of the
heartbeat timeout (2 s here). As soon as they train again the link is healed: host 3's agent
reaches the store, waits, and is admitted at the next checkpoint (world 4 again). Checked:

* the world-size schedule is 4 -> 3 -> 4 and every ringrun exits 0, no worker left behind;
* every sample of every epoch was used exactly once by the steps that count (a generation's
  steps after the checkpoint the next one resumed from were redone and do not count);
* the final parameters are bit-identical to a replay of the same schedule on this machine
  (one plain ringrun per segment, resuming from the previous segment's checkpoint), both with
  the ring all_reduce forced (RINGRT_ALGO) so the summation order depends only on the world.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from tests.netlab._lab import (
    MASTER_PORT,
    REPO,
    TOKEN,
    gige_lab_or_skip,
    outputs,
    wait_jobs,
)
from tests.train._elastic import (
    check_each_sample_once,
    replay,
    schedule_of,
    steps_by_generation,
)

HOSTS, CUT = 4, 3
HEARTBEAT = 2.0
SAMPLES, BATCH, EPOCHS, CKPT_EVERY = 240, 12, 3, 5
TRAIN = [str(REPO / "examples" / "train.py")]
ARGS = ["--elastic", "--epochs", str(EPOCHS), "--batch-size", str(BATCH), "--train-samples",
        str(SAMPLES), "--hidden", "16", "--lr", "0.01", "--ckpt-every", str(CKPT_EVERY)]
ENV = {"RINGRT_HEARTBEAT_TIMEOUT": f"{HEARTBEAT:g}", "RINGRT_ALGO": "all_reduce=ring",
       "PYTHONPATH": str(REPO), "RINGRT_TOKEN": TOKEN}


@pytest.fixture
def lab4():
    yield from gige_lab_or_skip(HOSTS)


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (the test's own directory: its workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _wait_until(condition, timeout: float, jobs, what: str) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return time.time()
        assert all(job.proc.poll() is None for job in jobs), f"{what}\n{outputs(jobs)}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{outputs(jobs)}")


@pytest.mark.slow      # tests/launcher/test_elastic.py: losing and admitting nodes on loopback
@pytest.mark.timeout(150)
def test_lost_host_continues_on_three_and_rejoins_at_a_checkpoint(lab4, tmp_path):
    logdir, ckpt, final = tmp_path / "samples", tmp_path / "ckpt", tmp_path / "final.npz"
    master = lab4.hosts[lab4.names[0]]
    env = dict(os.environ, **ENV)
    jobs = []
    for host in lab4.names:
        cmd = [sys.executable, "-m", "ringrt_launcher", "--nnodes", f"2:{HOSTS}", "--master-addr",
               master, "--master-port", str(MASTER_PORT), "--max-restarts", "3",
               "--last-call", "1", "--join-timeout", "60", "-n", "1", *TRAIN, *ARGS,
               "--ckpt-dir", str(ckpt), "--sample-log", str(logdir), "--step-sleep", "0.15",
               "--save-params", str(final)]
        jobs.append(lab4.start(host, cmd, tmp_path / f"{host}.log", 120, env))
    cut_host = lab4.names[CUT]
    try:
        _wait_until(lambda: any(r["step"] > CKPT_EVERY + 2 for r in steps_by_generation(logdir).get(0, [])), 60,
                    jobs, "generation 0 past its first checkpoint")
        cut_at = time.time()
        lab4.cut(cut_host)
        resumed_at = _wait_until(lambda: 1 in steps_by_generation(logdir), 60, jobs, "generation 1")
        lab4.heal(cut_host)
        healed_at = time.time()
        codes = wait_jobs(jobs, 90)
    finally:
        lab4.heal(cut_host)
    assert codes == {host: 0 for host in lab4.names}, f"{codes}\n{outputs(jobs)}"
    assert _processes_mentioning(str(logdir)) == [], "workers left running"
    steps = steps_by_generation(logdir)
    schedule = schedule_of(steps)
    assert [world for _, world, _ in schedule] == [4, 3, 4], (schedule, outputs(jobs))
    first_step = {gen: min(r["time"] for r in records) for gen, records in steps.items()}
    resume_s, rejoin_s = first_step[1] - cut_at, first_step[2] - healed_at
    assert resume_s < HEARTBEAT + 15, (resume_s, outputs(jobs))

    check_each_sample_once(steps, schedule, EPOCHS, SAMPLES)
    got, want = np.load(final), np.load(replay(schedule, ARGS, tmp_path, ENV))
    assert sorted(got) == sorted(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    print(f"\nschedule (gen, world, from step): {schedule}; cut -> training on 3 again: "
          f"{resume_s:.1f} s (first step of generation 1 {resumed_at - cut_at:.1f} s after the "
          f"cut by the test's poll); heal -> first step on 4 again: {rejoin_s:.1f} s")
