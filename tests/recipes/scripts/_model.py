"""What every recipe trains: the same tiny model, data and steps, so that runs over "gloo" and
over "ringrt" can be compared parameter for parameter.

World 2 sums two numbers per element, which is exact whatever the order, so both backends
must end on the same bits.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

STEPS = 6
SAMPLES = 64        # the global batch; each rank takes SAMPLES / world_size of it
LR = 0.1


def use_backend(backend: str) -> str:
    """Make ``backend`` known to torch and return it.

    With ringrt[torch] installed, torch's ``torch.backends`` entry point registers "ringrt"
    during ``import torch``; without that entry point, one import line does. Under
    ringrun the import is needed for gloo too: ringrun's store holds MASTER_PORT, and
    ringrt.torch points torch's env:// at it (torch would try to start its own store there).
    """
    import torch.distributed as dist

    under_ringrun = "RINGRT_RESTART_COUNT" in os.environ
    if under_ringrun or (backend == "ringrt" and "ringrt" not in dist.Backend.backend_list):
        import ringrt.torch  # noqa: F401 - registers the "ringrt" backend
        print("recipe: registered ringrt by `import ringrt.torch`", flush=True)
    return backend


def torch_env_from_launcher() -> None:
    """Fill torch's env:// variables (RANK, WORLD_SIZE, LOCAL_RANK) from SLURM's or Open MPI's
    when the launcher set only those (srun, mpirun); MASTER_ADDR/PORT come from the job script."""
    for rank, size, local in (("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
                              ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                               "OMPI_COMM_WORLD_LOCAL_RANK")):
        if "RANK" not in os.environ and rank in os.environ:
            os.environ["RANK"] = os.environ[rank]
            os.environ["WORLD_SIZE"] = os.environ[size]
            os.environ["LOCAL_RANK"] = os.environ.get(local, "0")


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 8, generator=gen)
    y = x.sum(dim=1, keepdim=True).sin()
    return x, y


def shard(rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of every step's global batch."""
    x, y = make_data()
    per_rank = SAMPLES // world_size
    return x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]


def save_params(named: dict, path: str) -> None:
    """Write the parameters (name -> tensor) as an .npz, atomically."""
    arrays = {name: t.detach().cpu().numpy().copy() for name, t in named.items()}
    np.savez(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path)
