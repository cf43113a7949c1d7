"""Checkpoints across real processes: re-sharding to a new world size, and crashes mid-save."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.world import run_world, short_tmpdir

RUNS = ("zero", "ddp")       # ZeRO Adam (sharded state) and DDP + Adam (replicated state)


@pytest.fixture
def ckpt_dir():
    path = short_tmpdir("rrc-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def params_of(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def test_saved_at_world_4_resumed_at_world_2_equals_the_uninterrupted_run(ckpt_dir):
    # World 4 trains 12 steps, checkpointing at step 6; world 2 resumes there (ZeRO re-shards
    # 4 -> 2) and trains steps 6..12. Same global batches, so the results must agree.
    full = run_world("tests.train.workers:checkpoint_run", 4, timeout=60,
                     args={"directory": ckpt_dir, "start": 0, "stop": 12, "save_at": [6]})
    manifest = json.loads(Path(ckpt_dir, "zero", "ckpt-000001", "manifest.json").read_text())
    assert manifest["world_size"] == 4 and manifest["optimizer"]["kind"] == "zero"
    resumed = run_world("tests.train.workers:checkpoint_run", 2, timeout=60,
                        args={"directory": ckpt_dir, "start": 6, "stop": 12})
    for run in RUNS:
        assert resumed[0].values[f"extra/{run}"] == {"step": 6, "world_size": 4}
        want = params_of(full[0].arrays, f"{run}/")
        for rank in range(2):
            got = params_of(resumed[rank].arrays, f"{run}/")
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12,
                                           err_msg=f"{run} {name} rank {rank}")


@pytest.mark.parametrize("stage", ["shards-written", "renamed"])
def test_crash_mid_save_leaves_the_previous_checkpoint_loadable(ckpt_dir, stage, tmp_path):
    # Save at step 2 completes; rank 0 dies inside the save at step 4, either after every
    # shard is on disk but before publishing, or after the rename but before LATEST moves.
    crashed = run_world("tests.train.workers:checkpoint_run", 2, timeout=60,
                        args={"directory": ckpt_dir, "start": 0, "stop": 4, "save_at": [2, 4],
                              "fault_stage": stage},
                        expect_success=False, failure_grace=10)
    assert crashed[0].returncode == 13, crashed.report()
    assert crashed[1].returncode != 0          # its barrier lost rank 0
    for run in RUNS:                           # LATEST still names the complete checkpoint
        assert Path(ckpt_dir, run, "LATEST").read_text() == "ckpt-000001"
    # The previous checkpoint still loads: a fresh world resumes from step 2 and trains two
    # steps, which must reproduce a run that never crashed (and it can save again).
    resumed = run_world("tests.train.workers:checkpoint_run", 2, timeout=60,
                        args={"directory": ckpt_dir, "start": 2, "stop": 4, "save_at": [4]})
    clean = run_world("tests.train.workers:checkpoint_run", 2, timeout=60,
                      args={"directory": str(tmp_path), "start": 0, "stop": 4})
    for run in RUNS:
        assert resumed[0].values[f"extra/{run}"]["step"] == 2
        want = params_of(clean[0].arrays, f"{run}/")
        for name, value in params_of(resumed[0].arrays, f"{run}/").items():
            assert value.tobytes() == want[name].tobytes(), (run, name)
    for run in RUNS:                           # the new save replaced everything older
        root = Path(ckpt_dir, run)
        assert sorted(os.listdir(root)) == ["LATEST", (root / "LATEST").read_text()]
