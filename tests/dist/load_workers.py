"""Rank bodies for tests/dist/test_load_held.py: benchmarks.robustness.soak_load's loop, few ops."""

from __future__ import annotations

from benchmarks.robustness import soak_load


def soak(rank: int, world_size: int, api: str, ops: int, kinds=None, leak_bytes: int = 0):
    if api == "torch":
        import torch.distributed as tdist

        import ringrt.torch  # noqa: F401 - registers the backend
        tdist.init_process_group("ringrt")
    else:
        import ringrt as dist
        dist.init_process_group()
    kinds = kinds or (soak_load.NUMPY_KINDS if api == "numpy" else soak_load.TORCH_KINDS)
    results = soak_load.soak(api, kinds, ops, rank, world_size, leak_bytes)
    if api == "torch":
        tdist.destroy_process_group()
    else:
        dist.destroy_process_group()
    return {"results": results}
