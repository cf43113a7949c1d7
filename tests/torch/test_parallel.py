"""torch's parallel styles over "ringrt" end where they end over gloo in the same job, and
where the single-process run on the whole batch ends (tests/torch/parallel_workers.py).

Every group of a 2-rank mesh dimension reduces by one addition, so ringrt and gloo must agree
bit for bit there; FSDP2 over 4 ranks sums in an order of each backend's choosing, so there
both must be as close to the single-process parameters as each other.
"""

import numpy as np
import pytest

from tests.torch.parallel_workers import STYLES
from tests.world import run_world

# |parameter - single-process parameter|: float32 rounding through 3 AdamW steps (lr 1e-2)
TOLERANCE = 2e-5


def tour(world_size: int) -> list[dict]:
    world = run_world("tests.torch.parallel_workers:parallel_tour", world_size, timeout=150,
                      env={"RINGRT_TIMEOUT": "60", "OMP_NUM_THREADS": "1"})
    return [{**world[r].arrays, **world[r].values} for r in range(world_size)]


def check_training(results: list[dict], world_size: int) -> None:
    single = results[0]["single/params"]
    for style in STYLES[world_size]:
        if style.__name__ in ("dtensor", "monitored_barrier"):
            continue
        want = results[0]["single/pipeline_params"] if style.__name__ == "pipeline" else single
        for rank, got in enumerate(results):
            name = style.__name__
            ours, gloo = got[f"{name}/ringrt/params"], got[f"{name}/gloo/params"]
            assert ours.shape == want.shape, style.__name__
            gap, gloo_gap = np.abs(ours - want).max(), np.abs(gloo - want).max()
            assert gap <= TOLERANCE, (style.__name__, rank, gap)
            if style.__name__ == "fsdp2" and world_size == 4:
                assert gap <= 2 * gloo_gap + 1e-7, (style.__name__, gap, gloo_gap)
            else:
                assert ours.tobytes() == gloo.tobytes(), (style.__name__, rank, gap, gloo_gap)


def check_dtensor(results: list[dict]) -> None:
    a = np.arange(48.0, dtype=np.float32).reshape(8, 6)
    b = np.arange(24.0, dtype=np.float32).reshape(6, 4) / 8
    for got in results:
        for backend in ("ringrt", "gloo"):
            np.testing.assert_array_equal(got[f"dtensor/{backend}/product"], a @ b)
            np.testing.assert_array_equal(got[f"dtensor/{backend}/moved"], a)
            assert float(got[f"dtensor/{backend}/total"]) == a.sum()


@pytest.mark.timeout(200)
def test_world_2_dtensor_fsdp2_tensor_sequence_and_pipeline_parallel_match_gloo():
    results = tour(2)
    check_dtensor(results)
    check_training(results, 2)
    # torch's split_group needs an accelerator (or torchcomms): refused on CPU, as for gloo
    assert "No device associated" in results[0]["split_group/error"]


@pytest.mark.timeout(200)
def test_world_4_mesh_styles_hsdp_and_monitored_barrier_match_gloo():
    results = tour(4)
    check_dtensor(results)
    check_training(results, 4)
    first = results[0]
    for backend in ("ringrt", "gloo"):
        assert all(got[f"monitored_barrier/{backend}/all_arrived"] for got in results)
        assert "Rank 3" in first[f"monitored_barrier/{backend}/one_away"], first
        assert "2, 3" in first[f"monitored_barrier/{backend}/two_away"], first
    for rank in (1, 2):             # the others arrived but were not released: they raise too
        assert results[rank]["monitored_barrier/ringrt/one_away"] != "passed"
