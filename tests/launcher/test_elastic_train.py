"""examples/train.py --elastic under two loopback agents (no netlab needed): the job starts on
one node (``--nnodes 1:2``), the second arrives late and is admitted at the next checkpoint.
Every sample of every epoch is used exactly once, and the final model is bit-identical to a
replay of the same schedule (``ringrun -n 1`` then ``-n 2``). The same holds under DiLoCo
(``--sync-every``: checkpoints, and so membership changes, at outer steps), and for torch:
the chaos soak's torch worker under DiLoCo (``ringrt.torch.DiLoCo``, membership through
``ringrt.torch.membership_changed``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.launcher._ringrun import Ringrun, free_port
from tests.train._elastic import (
    REPO,
    TRAIN,
    check_each_sample_once,
    replay,
    schedule_of,
    steps_by_generation,
)

SAMPLES, EPOCHS = 96, 2
ARGS = ["--elastic", "--epochs", str(EPOCHS), "--batch-size", "8", "--train-samples",
        str(SAMPLES), "--hidden", "8", "--ckpt-every", "4"]
ENV = {"RINGRT_ALGO": "all_reduce=ring", "RINGRT_TOKEN": "elastic-train-test"}
TORCH_TRAIN = REPO / "benchmarks" / "robustness" / "_chaos_torch_train.py"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", [[], ["--sync-every", "2", "--fragments", "2"],
                                  pytest.param(["torch", "--sync-every", "2", "--fragments", "2"],
                                               marks=pytest.mark.slow)],
                         ids=["ddp", "diloco", "torch-diloco"])
def test_late_node_admitted_at_a_checkpoint_trains_each_sample_once(tmp_path, mode):
    logdir, final = tmp_path / "samples", tmp_path / "final.npz"
    script, env = TRAIN, ENV
    if mode[:1] == ["torch"]:
        pytest.importorskip("torch")
        mode = mode[1:]
        script = TORCH_TRAIN
        env = {**ENV, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    args = [*ARGS, *mode]
    agent_args = ["--nnodes", "1:2", "--master-addr", "127.0.0.1", "--master-port",
                  str(free_port()), "--last-call", "0.5", "--join-timeout", "30", "-n", "1",
                  str(script), *args, "--ckpt-dir", str(tmp_path / "ckpt"), "--sample-log",
                  str(logdir), "--step-sleep", "0.1", "--save-params", str(final)]
    with Ringrun(*agent_args, env=env) as first:
        end = time.monotonic() + 30
        while not steps_by_generation(logdir).get(0) and time.monotonic() < end:
            assert first.proc.poll() is None, first.wait(5)
            time.sleep(0.05)
        with Ringrun(*agent_args, env=env) as late:
            results = [first.wait(60), late.wait(60)]
    assert [r.returncode for r in results] == [0, 0], "\n".join(map(str, results))
    steps = steps_by_generation(logdir)
    schedule = schedule_of(steps)
    assert [world for _, world, _ in schedule] == [1, 2], schedule
    assert schedule[1][2] % 4 == 0 and schedule[1][2] > 0     # admitted at a checkpoint
    check_each_sample_once(steps, schedule, EPOCHS, SAMPLES)
    got, want = np.load(final), np.load(replay(schedule, args, tmp_path, env, script))
    assert sorted(got) == sorted(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    if script == TRAIN:
        assert "world-size schedule: 1 ranks from step 0, 2 ranks from step" in \
            results[0].stdout
