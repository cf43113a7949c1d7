"""No import line: the ``torch.backends`` entry point gives torch "ringrt" on ``import torch``,
lazily (tests/torch/scripts/autoload_job.py imports torch and nothing of ringrt)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launcher._ringrun import REPO, run
from tests.world import scratch_directory

JOB = str(Path(__file__).resolve().parent / "scripts" / "autoload_job.py")
BACKENDS = ("ringrt", "cpu:ringrt", "cpu:ringrt,cuda:nccl")


def _reports(stdout: str) -> list[dict]:
    return [json.loads(line.split("JOB ", 1)[1]) for line in stdout.splitlines() if "JOB " in line]


@pytest.mark.timeout(90)
def test_a_script_without_ringrt_imports_initialises_ringrt_and_mixed_strings():
    result = run("-n", "2", JOB, ";".join(BACKENDS), timeout=75)
    assert result.returncode == 0, result
    reports = _reports(result.stdout)
    assert len(reports) == 2, result
    for report in reports:
        # import torch ran the entry point and nothing of ringrt's backend.
        assert "_ringrt_autoload" in report["after_import_torch"], report
        assert not [m for m in report["after_import_torch"] if m.startswith("ringrt")], report
        for backend in BACKENDS:
            got = report[backend]
            assert got.get("total") == [3.0, 3.0, 3.0], (backend, got)     # 1 + 2 on 2 ranks
            assert got["world"] == 2 and got["backend"] == backend
        assert report["after_init"]        # the first init imported ringrt.torch


@pytest.mark.timeout(60)
def test_autoload_off_gives_torchs_unknown_backend_error():
    with scratch_directory("rra-") as directory:
        proc = subprocess.run(
            [sys.executable, JOB, "ringrt", os.path.join(directory, "store")], cwd=REPO,
            env=dict(os.environ, TORCH_DEVICE_BACKEND_AUTOLOAD="0"), capture_output=True,
            text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr
    (report,) = _reports(proc.stdout)
    assert "_ringrt_autoload" not in report["after_import_torch"], report
    assert "Unknown backend type ringrt" in report["ringrt"]["message"], report
    assert not report["after_init"]


@pytest.mark.timeout(60)
def test_import_torch_loads_only_the_entry_point():
    code = ("import sys, torch, torch.distributed as dist; "
            "print(sorted(m for m in sys.modules if 'ringrt' in m and 'editable' not in m)); "
            "print('ringrt' in dist.Backend.backend_list)")
    proc = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True,
                          timeout=45)
    assert proc.stdout.split("\n")[:2] == ["['_ringrt_autoload']", "True"], proc
