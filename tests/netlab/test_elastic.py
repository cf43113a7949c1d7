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

import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.netlab._lab import (
    MASTER_PORT,
    REPO,
    TOKEN,
    LabUnavailable,
    outputs,
    running_lab,
    wait_jobs,
)
from tests.world import wait_all_dead

HOSTS, CUT = 4, 3
HEARTBEAT = 2.0
SAMPLES, BATCH, EPOCHS, CKPT_EVERY = 240, 12, 3, 5
TRAIN = [str(REPO / "examples" / "train.py"), "--elastic", "--epochs", str(EPOCHS),
         "--batch-size", str(BATCH), "--train-samples", str(SAMPLES), "--hidden", "16",
         "--lr", "0.01", "--ckpt-every", str(CKPT_EVERY)]
ENV = {"RINGRT_HEARTBEAT_TIMEOUT": f"{HEARTBEAT:g}", "RINGRT_ALGO": "all_reduce=ring",
       "PYTHONPATH": str(REPO), "RINGRT_TOKEN": TOKEN}


@pytest.fixture
def lab4():
    try:
        with running_lab(HOSTS, "--profile", "gige") as lab:
            yield lab
    except LabUnavailable as exc:
        pytest.skip(str(exc))


def _steps(logdir: Path) -> dict[int, list[dict]]:
    """generation -> every step record of its ranks (with "rank")."""
    found = defaultdict(list)
    for path in logdir.glob("gen*-rank*.jsonl"):
        gen, rank = (int(part[len(tag):]) for part, tag in
                     zip(path.stem.split("-"), ("gen", "rank")))
        for line in path.read_text().splitlines():
            if line.strip():
                found[gen].append(dict(json.loads(line), rank=rank))
    return found


def _wait_until(condition, timeout: float, jobs, what: str) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return time.time()
        assert all(job.proc.poll() is None for job in jobs), f"{what}\n{outputs(jobs)}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{outputs(jobs)}")


def _schedule(steps: dict[int, list[dict]]) -> list[tuple[int, int, int]]:
    """[(generation, world size, resumed-from step)] in generation order."""
    return [(gen, len({r["rank"] for r in records}), min(r["step"] for r in records) - 1)
            for gen, records in sorted(steps.items())]


def _replay(schedule, workdir: Path) -> Path:
    """The same schedule of world sizes on this machine, one plain ringrun per segment."""
    ckpt, final = workdir / "replay-ckpt", workdir / "replay.npz"
    env = dict(os.environ, **ENV)
    for index, (_, world, start) in enumerate(schedule):
        stop = schedule[index + 1][2] if index + 1 < len(schedule) else 0
        args = [*TRAIN, "--ckpt-dir", str(ckpt), "--stop-at-step", str(stop),
                "--save-params", str(final)]
        if start:
            args.append("--resume")
        proc = subprocess.run([sys.executable, "-m", "launcher", "-n", str(world), *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return final


@pytest.mark.timeout(150)
def test_lost_host_continues_on_three_and_rejoins_at_a_checkpoint(lab4, tmp_path):
    logdir, ckpt, final = tmp_path / "samples", tmp_path / "ckpt", tmp_path / "final.npz"
    master = lab4.hosts[lab4.names[0]]
    env = dict(os.environ, **ENV)
    jobs = []
    for host in lab4.names:
        cmd = [sys.executable, "-m", "launcher", "--nnodes", f"2:{HOSTS}", "--master-addr",
               master, "--master-port", str(MASTER_PORT), "--max-restarts", "3",
               "--last-call", "1", "--join-timeout", "60", "-n", "1", *TRAIN,
               "--ckpt-dir", str(ckpt), "--sample-log", str(logdir), "--step-sleep", "0.15",
               "--save-params", str(final)]
        jobs.append(lab4.start(host, cmd, tmp_path / f"{host}.log", 120, env))
    cut_host = lab4.names[CUT]
    try:
        _wait_until(lambda: any(r["step"] > CKPT_EVERY + 2 for r in _steps(logdir)[0]), 60,
                    jobs, "generation 0 past its first checkpoint")
        cut_at = time.time()
        lab4.cut(cut_host)
        resumed_at = _wait_until(lambda: 1 in _steps(logdir), 60, jobs, "generation 1")
        lab4.heal(cut_host)
        healed_at = time.time()
        codes = wait_jobs(jobs, 90)
    finally:
        lab4.heal(cut_host)
    assert codes == {host: 0 for host in lab4.names}, f"{codes}\n{outputs(jobs)}"
    steps = _steps(logdir)
    schedule = _schedule(steps)
    assert [world for _, world, _ in schedule] == [4, 3, 4], (schedule, outputs(jobs))
    first_step = {gen: min(r["time"] for r in records) for gen, records in steps.items()}
    resume_s, rejoin_s = first_step[1] - cut_at, first_step[2] - healed_at
    assert resume_s < HEARTBEAT + 15, (resume_s, outputs(jobs))

    _check_each_sample_once(steps, schedule)
    replay = _replay(schedule, tmp_path)
    got, want = np.load(final), np.load(replay)
    assert sorted(got) == sorted(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    print(f"\nschedule (gen, world, from step): {schedule}; cut -> training on 3 again: "
          f"{resume_s:.1f} s (first step of generation 1 {resumed_at - cut_at:.1f} s after the "
          f"cut by the test's poll); heal -> first step on 4 again: {rejoin_s:.1f} s")


def _check_each_sample_once(steps, schedule) -> None:
    counted = defaultdict(list)          # epoch -> indices used by the steps that count
    for index, (gen, _, start) in enumerate(schedule):
        end = schedule[index + 1][2] if index + 1 < len(schedule) else float("inf")
        for record in steps[gen]:
            if start < record["step"] <= end:
                counted[record["epoch"]].extend(record["indices"])
    assert sorted(counted) == list(range(EPOCHS))
    for epoch, indices in counted.items():
        assert Counter(indices) == Counter(range(SAMPLES)), f"epoch {epoch}"
