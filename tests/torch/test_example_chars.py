"""examples/torch_train.py --task chars under ringrun: DiLoCo (--sync-every) with int8
pseudo-gradients and synchronous DDP with torch's PowerSGD hook both learn and log their
validation losses; a combination that cannot work is refused with the fix."""

from __future__ import annotations

import json
import math

import pytest

from tests.launcher._ringrun import run

SCRIPT = "examples/torch_train.py"
QUICK = ("--task", "chars", "--samples", "9600", "--eval-every", "3200", "--batch-size", "64",
         "--hidden", "64")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", [("--sync-every", "5", "--compress", "int8"),
                                 ("--compress", "powersgd")])
def test_chars_learns_and_logs_its_validation_loss(workdir, how):
    log = f"{workdir}/log.json"
    result = run("-n", "2", SCRIPT, *QUICK, *how, "--log-json", log, "--target-loss", "4",
                 timeout=90)
    assert result.returncode == 0, result
    evals = json.loads(open(log).read())["evals"]
    assert [e["samples"] for e in evals] == [3200, 6400, 9600]
    losses = [e["val_loss"] for e in evals]
    assert losses[-1] < losses[0] < math.log(103)         # better than a uniform guess


@pytest.mark.timeout(60)
def test_powersgd_with_sync_every_is_refused_with_the_fix(workdir):
    result = run("-n", "1", SCRIPT, *QUICK, "--sync-every", "5", "--compress", "powersgd",
                 timeout=45)
    assert result.returncode != 0
    assert "--compress powersgd is for synchronous DDP" in result.stdout + result.stderr
