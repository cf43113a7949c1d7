"""A hung job: the last rank skips the 6th all_reduce and sleeps (ringrun --timeout ends it).

Every rank records its pid (tests/launcher/_ringrun.py kills what is left). The line numbers
of the two marked calls are what the test expects the summary to name.
"""

import sys
import time

import numpy as np

import ringrt as dist
from _pids import record_pid

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
record_pid(f"rank{rank}")
x = np.ones(1024, dtype=np.float32)
for step in range(6):
    if step == 5 and rank == world - 1:
        time.sleep(120)                                   # HANG-LINE: skips the collective
    dist.all_reduce(x)                                    # COLLECTIVE-LINE
    if step == 4:
        print(f"rank {rank} finished step 4", file=sys.stderr, flush=True)
dist.destroy_process_group()
