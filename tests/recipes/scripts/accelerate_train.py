"""HF Accelerate over "ringrt":
``torchrun --nproc-per-node 2 accelerate_train.py --backend ringrt --out F``.

For CPU jobs Accelerate picks the backend itself ("mpi" when torch has MPI, else "gloo",
accelerate/state.py ``_prepare_backend``) and raises ValueError for any other it is asked for,
``InitProcessGroupKwargs(backend=...)`` included. It does keep a process group that already
exists (``if not torch.distributed.is_initialized()``), so the workaround is one line before
``Accelerator()``: create the group yourself.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import LR, SAMPLES, STEPS, make_data, make_model, save_params, use_backend  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="ringrt")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    from accelerate import Accelerator

    dist.init_process_group(use_backend(args.backend))    # the workaround: before Accelerator()
    accelerator = Accelerator(cpu=True)
    assert dist.get_backend() == args.backend, dist.get_backend()
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = make_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                         batch_size=SAMPLES // accelerator.num_processes)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for _ in range(STEPS):
        for xb, yb in loader:          # one batch per rank per step: the global batch is the set
            optimizer.zero_grad()
            accelerator.backward(torch.nn.functional.mse_loss(model(xb), yb))
            optimizer.step()
    if accelerator.is_main_process:
        save_params(dict(accelerator.unwrap_model(model).named_parameters()), args.out)
    print(f"recipe: rank {accelerator.process_index} done over {dist.get_backend()}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
