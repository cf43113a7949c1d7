"""A torch script run under ``torchrun``: the "ringrt" backend over torch's own TCPStore
(agent store), a subgroup and a DDP step; each rank writes ``$RESULT_DIR/rank{R}.json``."""

import json
import os

import torch
import torch.distributed as dist

import ringrt.torch  # noqa: F401

dist.init_process_group("ringrt")
rank, world = dist.get_rank(), dist.get_world_size()
total = torch.full((4,), float(rank + 1))
dist.all_reduce(total)
pair = dist.new_group([0, 1])
both = torch.full((2,), float(rank))
dist.all_reduce(both, group=pair)
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
model(torch.full((2, 3), float(rank))).sum().backward()
store = dist.distributed_c10d._get_default_store()
while isinstance(store, dist.PrefixStore):
    store = store.underlying_store
with open(os.path.join(os.environ["RESULT_DIR"], f"rank{rank}.json"), "w") as out:
    json.dump({"rank": rank, "world": world, "total": total.tolist(), "pair": both.tolist(),
               "grad": model.module.weight.grad.reshape(-1).tolist(),
               "store": type(store).__name__,
               "agent_store": os.environ.get("TORCHELASTIC_USE_AGENT_STORE")}, out)
dist.destroy_process_group()
