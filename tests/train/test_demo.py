"""The demo, end to end through ringrun: it learns, and a crash + restart changes nothing.

``ringrun -n 4 --max-restarts 1 examples/train.py --crash-at-step N`` makes rank 1 die at step N
of the first attempt; the restarted job resumes from the last checkpoint and must end with the
same parameters, bit for bit, as a run that never crashed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.launcher._ringrun import REPO, final_accuracy, run

TRAIN = "examples/train.py"
EPOCHS = "3"            # 22 steps per epoch at the default global batch of 64


@pytest.mark.parametrize("mode", [[], ["--zero"]], ids=["ddp", "zero"])
def test_crash_and_restart_ends_with_the_uninterrupted_parameters(workdir, mode):
    clean = run("-n", "4", TRAIN, "--epochs", EPOCHS, *mode,
                "--save-params", f"{workdir}/clean.npz", timeout=90)
    assert clean.returncode == 0, clean
    assert final_accuracy(clean.stdout) > 0.9
    crashed = run("-n", "4", "--max-restarts", "1", TRAIN, "--epochs", EPOCHS, *mode,
                  "--ckpt-dir", f"{workdir}/ckpt", "--ckpt-every", "10", "--crash-at-step", "25",
                  "--save-params", f"{workdir}/resumed.npz", timeout=90)
    assert crashed.returncode == 0, crashed
    assert "fault injection: rank 1 exits at step 25" in crashed.stdout
    assert "resumed from" in crashed.stdout and "at step 20 (restart 1)" in crashed.stdout
    with np.load(f"{workdir}/clean.npz") as want, np.load(f"{workdir}/resumed.npz") as got:
        assert sorted(got.files) == sorted(want.files)
        for name in want.files:
            assert got[name].tobytes() == want[name].tobytes(), name


def test_runs_as_a_single_process_without_a_launcher():
    # No RANK in the environment: train.py makes itself a world of one.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run([sys.executable, TRAIN, "--epochs", "1"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert final_accuracy("[0] " + result.stdout.splitlines()[-1]) > 0.5
