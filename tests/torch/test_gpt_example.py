"""examples/torch_gpt.py end to end under ringrun: DDP at -n 2 and FSDP2 x tensor/sequence
parallel on a 2x2 mesh at -n 4 both learn, and both follow the same losses (the same model,
the same global batches: each layout computes the same mean gradient)."""

from __future__ import annotations

import json

import pytest

from tests.launcher._ringrun import run

SCRIPT = "examples/torch_gpt.py"
STEPS = 8


def losses(workdir: str, ranks: int) -> list[float]:
    log = f"{workdir}/losses-{ranks}.json"
    result = run("-n", str(ranks), SCRIPT, "--steps", str(STEPS), "--log-json", log,
                 timeout=120)
    assert result.returncode == 0, result
    return json.loads(open(log).read())["losses"]


@pytest.mark.timeout(300)
def test_gpt_example_trains_with_ddp_and_on_a_2x2_mesh(workdir):
    ddp, mesh = losses(workdir, 2), losses(workdir, 4)
    for run_losses in (ddp, mesh):
        assert len(run_losses) == STEPS
        assert run_losses[-1] < run_losses[0] - 0.5        # ln(vocab) ~4.7 at the start
    for a, b in zip(ddp, mesh, strict=True):
        assert abs(a - b) < 1e-3 * a
