"""Every torch.distributed collective on a "ringrt" group, against gloo in the same job and
against a reference computed from every rank's inputs (tests/torch/cases.py)."""

import numpy as np
import pytest

from tests.torch.cases import as_numpy, cases, expected
from tests.world import run_world


def check_table(world_size: int) -> None:
    world = run_world("tests.torch.workers:collective_table", world_size, timeout=150)
    failures, against_gloo = [], 0
    for case in cases(world_size):
        for rank in range(world_size):
            got = world[rank].arrays["ringrt/" + case.name]
            want = expected(case, world_size, rank)
            if want is not None and got.tobytes() != as_numpy(want.reshape(got.shape)).tobytes():
                failures.append(f"{case.name} rank {rank}: got {got.ravel()[:6]} want "
                                f"{as_numpy(want).ravel()[:6]}")
            theirs = world[rank].arrays.get("gloo/" + case.name)
            if theirs is not None and want is not None:
                against_gloo += 1
                if theirs.dtype == bool:       # gloo's bool SUM adds bytes: True may be 2
                    theirs = theirs.view(np.uint8) != 0
                if theirs.tobytes() != got.tobytes():
                    failures.append(f"{case.name} rank {rank}: ringrt {got.ravel()[:6]} but "
                                    f"gloo {theirs.ravel()[:6]}")
    assert not failures, f"{len(failures)} wrong:\n" + "\n".join(failures[:40])
    refused = sorted({k.split("/", 1)[1] for k in world[0].values if k.startswith("gloo-")})
    print(f"world {world_size}: {len(cases(world_size))} cases, {against_gloo} results "
          f"compared with gloo; gloo refused {len(refused)}: {refused}")
    return against_gloo


@pytest.mark.timeout(200)
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_every_collective_matches_gloo_and_the_reference(world_size):
    compared = check_table(world_size)
    assert compared > 200, f"only {compared} results could be compared with gloo"
