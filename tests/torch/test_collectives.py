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


@pytest.mark.timeout(120)
@pytest.mark.parametrize("steps", [{}, {"RINGRT_NO_NATIVE": "1"}], ids=["C module", "Python"])
def test_small_all_reduce_runs_on_the_tensors_memory_and_equals_gloo(steps):
    """torch's blocking all_reduce of a small tensor goes straight to the group's fast path
    (no NumPy view, no ringrt call between) where the C module compiles the dtype and
    reduction; everything else takes the general way; every result equals gloo's."""
    from ringrt import _native

    world = run_world("tests.torch.workers:small_all_reduce_paths", 2, timeout=100, env=steps)
    native = _native.fastpath is not None and not steps
    for rank in range(2):
        arrays = world[rank].arrays
        for key, pair in arrays.items():
            if key.endswith("/direct"):
                direct, plain = pair
                assert direct == (plain and native), (rank, key, direct)
            elif key not in ("direct", "held"):
                ours, gloo = pair
                assert ours.tobytes() == gloo.tobytes(), (rank, key, ours, gloo)
        held_kept, not_reused, few_works, total = arrays["held"]
        assert held_kept and not_reused and total == 6.0
        assert few_works or not native, "completed Works are reused when nothing holds them"
        taken, expected, has_fast = arrays["direct"]
        assert has_fast and taken == (expected if native else 0)
