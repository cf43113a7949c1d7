# hello_allreduce.py — run with:  ringrun -n 4 examples/hello_allreduce.py
import numpy as np

import ringrt as dist

dist.init_process_group()                      # reads RANK, WORLD_SIZE, MASTER_ADDR, ... from ringrun
x = np.full(4, dist.get_rank() + 1.0)
dist.all_reduce(x)                             # in place, like torch: every rank now holds the sum
print(f"rank {dist.get_rank()} of {dist.get_world_size()}: {x}")   # [10. 10. 10. 10.] with 4 ranks
dist.destroy_process_group()
