"""examples/torch_train.py end to end under ringrun: it learns, and over "ringrt" it ends
with the parameters it ends with over gloo (world 2: every gradient sum is one addition)."""

from __future__ import annotations

import pytest
import torch

from tests.launcher._ringrun import final_accuracy, run

SCRIPT = "examples/torch_train.py"


@pytest.mark.timeout(120)
def test_torch_example_learns_and_matches_gloo(workdir):
    finals = {}
    for backend in ("ringrt", "gloo"):
        result = run("-n", "2", SCRIPT, "--epochs", "3", "--backend", backend,
                     "--save-params", f"{workdir}/{backend}.pt", timeout=90)
        assert result.returncode == 0, result
        assert f"torch DDP over {backend}" in result.stdout
        finals[backend] = final_accuracy(result.stdout)
    assert finals["ringrt"] > 0.85 and finals["ringrt"] == finals["gloo"]
    ours, theirs = torch.load(f"{workdir}/ringrt.pt"), torch.load(f"{workdir}/gloo.pt")
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
