"""all_reduce on every attempt; rank 1 dies after the first attempt's all_reduce.

Checks that a restarted group can rendezvous again through the launcher's (same) store.
"""

import os

import numpy as np

import ringrt as dist

attempt = int(os.environ["RINGRT_RESTART_COUNT"])
dist.init_process_group()
x = np.full(3, float(dist.get_rank() + 1))
dist.all_reduce(x)
assert (x == sum(range(1, dist.get_world_size() + 1))).all(), x
print(f"attempt {attempt} OK {x[0]:g}", flush=True)
if attempt == 0 and dist.get_rank() == 1:
    os._exit(7)                  # die without a goodbye, as a crash would
dist.destroy_process_group()
