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


class CPUFSDPStrategy(L.pytorch.strategies.FSDPStrategy):
    """FSDPStrategy on CPU. Lightning refuses ``FSDPStrategy`` itself without a GPU, whatever the
    backend (gloo too): its check (accelerator_connector.py, ``_check_strategy_and_fallback``)
    tests ``type(strategy) is FSDPStrategy``, so a subclass passes. And Lightning wraps the
    model with ``device_id=root_device.index``, None on CPU, which torch's FSDP refuses ("needs
    a non-CPU accelerator device"): wrap it here with ``device_id=cpu`` (Lightning keeps a
    model that is already wrapped)."""

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = FullyShardedDataParallel(model, device_id=torch.device("cpu"),
                                           sharding_strategy=self.sharding_strategy,
                                           cpu_offload=self.cpu_offload)
        return super()._setup_model(wrapped)


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
        strategy = CPUFSDPStrategy(process_group_backend=backend)
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
    rank = trainer.global_rank
    if args.strategy == "ddp":
        if rank == 0:
            save_params(dict(model.net.named_parameters()), args.out)
    else:
        # FSDP: each rank's own shard of the flat parameters. (Gathering the full state dict,
        # lightning_module_state_dict(), fails on CPU over gloo too: torch's FSDP unflattens
        # into an empty storage there.) Rank 0 merges the shards once both are written.
        save_params({f"rank{rank}.{name}": p for name, p in model.named_parameters()},
                    f"{args.out}.rank{rank}.npz")
        dist.barrier()
        if rank == 0:
            import numpy as np

            merged = {}
            for r in range(trainer.world_size):
                with np.load(f"{args.out}.rank{r}.npz") as shard:
                    merged.update({k: torch.from_numpy(shard[k]) for k in shard.files})
            save_params(merged, args.out)
    print(f"recipe: rank {trainer.global_rank} done over {dist.get_backend()}", flush=True)


if __name__ == "__main__":
    main()
