"""Elastic-job worker: ``elastic_worker.py OUT_DIR LAST_GEN``.

Every generation all-reduces its ranks and records what it saw in ``OUT_DIR/gen{G}-rank{R}.json``.
Generations before ``LAST_GEN`` then keep "training" (an all_reduce every 50 ms) and, at each
step, ask ``ringrt.elastic.membership_changed()``: True exits with RESTART_EXIT_CODE so the
agents admit the waiting node. Generation ``LAST_GEN`` (and later) ends with exit 0. A lost
peer surfaces as PeerLostError and the worker fails, as a real one would.
"""

import json
import os
import sys
import time

import numpy as np

import ringrt as dist
from ringrt import elastic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pids import record_pid

out, last_gen = sys.argv[1], int(sys.argv[2])
gen = elastic.generation()
record_pid(f"rank{os.environ['RANK']}-gen{gen}-pid{os.getpid()}")
dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
total = np.array([rank + 1.0])
dist.all_reduce(total)
record = {"gen": gen, "restart": int(os.environ["RINGRT_RESTART_COUNT"]), "world": world,
          "rank": rank, "node_rank": int(os.environ["NODE_RANK"]), "sum": float(total[0]),
          "started": time.time()}
path = os.path.join(out, f"gen{gen}-rank{rank}.json")
with open(path + ".tmp", "w") as f:          # atomically: the test polls for these files
    json.dump(record, f)
os.replace(path + ".tmp", path)
print(f"generation {gen}: rank {rank} of {world}", flush=True)
if gen < last_gen:
    for _ in range(600):
        dist.all_reduce(np.ones(4))
        if elastic.membership_changed():
            dist.destroy_process_group()
            sys.exit(elastic.RESTART_EXIT_CODE)
        time.sleep(0.05)
    sys.exit(3)                       # nobody joined within 30 s
dist.destroy_process_group()
