"""A few DDP steps of a small two-layer model with Adam: the job `ringrun --trace` records."""

import numpy as np

import ringrt as dist
from ringrt.ddp import DistributedDataParallel
from ringrt.optim import Adam

STEPS = 4

dist.init_process_group()
rng = np.random.default_rng(dist.get_rank())
params = {"w1": np.zeros((64, 256), np.float32), "b1": np.zeros(256, np.float32),
          "w2": np.zeros((256, 512), np.float32), "b2": np.zeros(512, np.float32)}
ddp = DistributedDataParallel(params, bucket_cap_mb=0.25)
optimizer = Adam(ddp.params, lr=1e-3)
for step in range(STEPS):
    for name in reversed(list(params)):                    # the backward's order
        ddp.grads[name] = rng.standard_normal(params[name].shape).astype(np.float32)
        ddp.grad_ready(name)
    ddp.sync()
    optimizer.step(ddp.grads)
dist.barrier()
print("buckets", len(ddp.buckets), "steps", STEPS)
dist.destroy_process_group()
