"""Ray Train over "ringrt": a local Ray cluster, ``TorchTrainer`` with
``TorchConfig(backend="ringrt")`` and 2 CPU workers:
``python ray_train.py --backend ringrt --out F``.

Ray starts its workers itself, so "ringrt" must be known to torch in each of them: with the
``torch.backends`` entry point (ringrt[torch] installed) ``import torch`` does it;
without it, ``worker_process_setup_hook`` imports ringrt.torch in every worker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
sys.path.insert(0, HERE)


def setup_worker() -> None:
    """Ray's worker_process_setup_hook: register the backend in every worker process."""
    import ringrt.torch  # noqa: F401


def train_loop(config: dict) -> None:
    import torch
    import torch.distributed as dist
    from ray import train
    from ray.train.torch import prepare_model

    sys.path.insert(0, config["here"])
    from _model import LR, STEPS, make_model, save_params, shard

    context = train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    assert dist.get_backend() == config["backend"], dist.get_backend()
    model = prepare_model(make_model())          # DistributedDataParallel over the group
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = shard(rank, world_size)
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    if rank == 0:
        save_params(dict(model.module.named_parameters()), config["out"])
    print(f"recipe: rank {rank} done over {dist.get_backend()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="ringrt")
    parser.add_argument("--out", required=True)
    parser.add_argument("--hook", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--temp-dir", default=None, help="Ray's session directory")
    args = parser.parse_args()

    import ray
    import torch.distributed as dist
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    hook = args.hook == "yes" or (args.hook == "auto" and "ringrt" not in dist.Backend.backend_list)
    runtime_env = {"worker_process_setup_hook": setup_worker, "env_vars": {"PYTHONPATH": HERE}}
    if not hook:
        runtime_env.pop("worker_process_setup_hook")
    print(f"recipe: worker_process_setup_hook {'used' if hook else 'not needed'}", flush=True)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=runtime_env,
             _temp_dir=args.temp_dir)
    try:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"backend": args.backend, "out": args.out, "here": HERE},
            torch_config=TorchConfig(backend=args.backend),
            scaling_config=ScalingConfig(num_workers=2, use_gpu=False,
                                         resources_per_worker={"CPU": 1}),
            run_config=RunConfig(storage_path=str(Path(args.out).parent / "ray"),
                                 name=f"recipe-{args.backend}"),
        )
        trainer.fit()
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
