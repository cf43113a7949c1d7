"""Lightning over "ringrt": ``python lightning_train.py --strategy ddp --backend ringrt --out F``.

Lightning starts the second process itself (devices=2), or uses the processes a launcher
started (``ringrun -n 2 lightning_train.py ...``: RANK/WORLD_SIZE/LOCAL_RANK are set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _model import LR, SAMPLES, STEPS, make_data, make_model, save_params, use_backend  # noqa: E402


class Recipe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = make_model()

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--backend", default="ringrt")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    backend = use_backend(args.backend)
    if args.strategy == "ddp":
        strategy = L.pytorch.strategies.DDPStrategy(process_group_backend=backend)
    else:
        strategy = L.pytorch.strategies.FSDPStrategy(process_group_backend=backend)
    world = 2
    x, y = make_data()
    # each step's global batch is the whole set; Lightning's DistributedSampler (shuffle off)
    # gives rank r the samples r, r + 2, ...
    loader = DataLoader(TensorDataset(x, y), batch_size=SAMPLES // world, shuffle=False)
    trainer = L.Trainer(accelerator="cpu", devices=world, strategy=strategy, max_epochs=STEPS,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True)
    model = Recipe()
    trainer.fit(model, loader)
    import torch.distributed as dist

    assert dist.get_backend() == backend, dist.get_backend()
    state = trainer.strategy.lightning_module_state_dict()   # FSDP: gathered on rank 0
    if trainer.global_rank == 0:
        save_params({k.removeprefix("net."): v for k, v in state.items()}, args.out)
    print(f"recipe: rank {trainer.global_rank} done over {dist.get_backend()}", flush=True)


if __name__ == "__main__":
    main()
