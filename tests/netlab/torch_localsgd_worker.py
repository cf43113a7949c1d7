"""Rank-side script of the netlab DiLoCo / comm-hook test (3 lab hosts, 2 ranks each, started
by ``ringrun`` on each host): torch's own DDP comm hooks (bf16, PowerSGD) over "ringrt" and
over gloo in the same job, and DiLoCo with two levels (DDP inside a host, DiLoCo across the
hosts) against the one-process simulation of tests/torch/localsgd_workers.py. Writes
``rank{R}.npz`` and ``pid{R}`` to ``$NETLAB_TEST_OUT``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch.distributed as dist

import ringrt.torch  # noqa: F401 - registers the backend
from tests.torch.localsgd_workers import diloco_run, hook_run, simulate

OUT = Path(os.environ["NETLAB_TEST_OUT"])


def main() -> None:
    rank = int(os.environ["RANK"])
    (OUT / f"pid{rank}").write_text(str(os.getpid()))
    dist.init_process_group("ringrt")
    world = dist.get_world_size()
    gloo = dist.new_group(backend="gloo")
    out = {}
    for hook in ("bf16", "powersgd"):
        out[f"ringrt/{hook}"] = hook_run(rank, world, None, hook).numpy()
        out[f"gloo/{hook}"] = hook_run(rank, world, gloo, hook).numpy()
    out["two_level"] = diloco_run(rank, world, dict(sync_every=4, fragments=2,
                                                    two_level=True)).numpy()
    if rank == 0:
        per_host = int(os.environ["LOCAL_WORLD_SIZE"])
        hosts = [list(range(h, h + per_host)) for h in range(0, world, per_host)]
        for h, params in enumerate(simulate(hosts, world, sync_every=4, fragments=2)):
            out[f"reference/{h}"] = params.numpy()
    dist.barrier()
    dist.destroy_process_group()
    tmp = OUT / f"rank{rank}.tmp.npz"
    np.savez(tmp, **out)
    tmp.rename(OUT / f"rank{rank}.npz")


if __name__ == "__main__":
    main()
