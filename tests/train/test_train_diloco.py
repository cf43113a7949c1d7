"""examples/train.py with DiLoCo, compression and the chars task, end to end through ringrun.

A crash + restart under ``--sync-every`` (int8 with error feedback) resumes from a checkpoint
taken at an outer step and ends with the uninterrupted run's parameters, bit for bit, and so
does one under ``--compress powersgd`` (in both, each rank's error feedback is in the
checkpoint); ``--task chars`` writes its ``--log-json`` records and stops at
``--max-samples``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.launcher._ringrun import final_accuracy, run

TRAIN = "examples/train.py"
DILOCO = ("--sync-every", "4", "--fragments", "2", "--outer-compress", "int8",
          "--error-feedback")                       # per-rank residuals in checkpoints
POWERSGD = ("--compress", "powersgd", "--powersgd-rank", "2")   # error feedback in checkpoints


@pytest.mark.parametrize("mode", [DILOCO, POWERSGD], ids=["diloco", "powersgd"])
def test_crash_and_restart_ends_with_the_uninterrupted_parameters(workdir, mode):
    common = ("-n", "2")
    args = (TRAIN, "--epochs", "2", *mode, "--ckpt-dir")
    clean = run(*common, *args, f"{workdir}/clean-ckpt", "--ckpt-every", "8",
                "--save-params", f"{workdir}/clean.npz", timeout=90)
    assert clean.returncode == 0, clean
    assert final_accuracy(clean.stdout) > 0.7
    crashed = run(*common, "--max-restarts", "1", *args, f"{workdir}/ckpt", "--ckpt-every", "8",
                  "--crash-at-step", "19", "--save-params", f"{workdir}/resumed.npz", timeout=90)
    assert crashed.returncode == 0, crashed
    assert "at step 16 (restart 1)" in crashed.stdout
    with np.load(f"{workdir}/clean.npz") as want, np.load(f"{workdir}/resumed.npz") as got:
        for name in want.files:
            assert got[name].tobytes() == want[name].tobytes(), name


def test_ckpt_every_must_be_a_multiple_of_sync_every(workdir):
    result = run("-n", "1", TRAIN, "--sync-every", "4", "--ckpt-dir", f"{workdir}/c",
                 "--ckpt-every", "6", timeout=60)
    assert result.returncode != 0
    assert "--ckpt-every 6 must be a multiple of --sync-every 4" in result.stdout + result.stderr


def test_chars_logs_validation_loss_and_stops_at_the_sample_budget(workdir):
    log = f"{workdir}/log.jsonl"
    result = run("-n", "2", TRAIN, "--task", "chars", "--hidden", "64", "--sync-every", "10",
                 "--eval-every", "20", "--val-samples", "512", "--max-samples", "5120",
                 "--log-json", log, timeout=90)
    assert result.returncode == 0, result
    records = [json.loads(line) for line in open(log)]
    assert [r["step"] for r in records] == [20, 40, 60, 80]
    assert [r["samples"] for r in records] == [1280, 2560, 3840, 5120]
    assert all(r["val_loss"] > 0 and r["time_s"] > 0 for r in records)
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert "--max-samples spent" in result.stdout
