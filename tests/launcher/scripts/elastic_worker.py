"""Elastic-job worker: ``elastic_worker.py OUT_DIR LAST_GEN``.

Every generation all-reduces its ranks and records what it saw in ``OUT_DIR/gen{G}-rank{R}.json``.
Generations before ``LAST_GEN`` then keep "training" (an all_reduce every 50 ms) and, at each
step, ask ``ringrt.elastic.membership_changed()``: True exits with RESTART_EXIT_CODE so the
agents admit the waiting node. Generation ``LAST_GEN`` (and later) ends with exit 0. A lost
peer surfaces as PeerLostError and the worker fails, as a real one would.

``ELASTIC_TEST_HOLD_GEN=G``: in generation G every worker first records its node and its agent
(``OUT_DIR/held-genG-rankR.json``) and then waits for the file ``OUT_DIR/go`` before
``init_process_group``, so a test can kill an agent while its generation is still starting up.
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

HOLD_TIMEOUT = 30.0                   # s; the test writes OUT_DIR/go well before


def write_record(path, record):
    with open(path + ".tmp", "w") as f:      # atomically: the test polls for these files
        json.dump(record, f)
    os.replace(path + ".tmp", path)


def hold_before_start_up(out, gen):
    """Record who we are, then wait (bounded) for the test's go-ahead."""
    write_record(os.path.join(out, f"held-gen{gen}-rank{os.environ['RANK']}.json"),
                 {"node_rank": int(os.environ["NODE_RANK"]), "agent": os.getppid()})
    end = time.monotonic() + HOLD_TIMEOUT
    while not os.path.exists(os.path.join(out, "go")):
        if time.monotonic() > end:
            sys.exit(f"no {out}/go within {HOLD_TIMEOUT} s")
        time.sleep(0.02)


out, last_gen = sys.argv[1], int(sys.argv[2])
gen = elastic.generation()
record_pid(f"rank{os.environ['RANK']}-gen{gen}-pid{os.getpid()}")
if os.environ.get("ELASTIC_TEST_HOLD_GEN") == str(gen):
    hold_before_start_up(out, gen)
dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
total = np.array([rank + 1.0])
dist.all_reduce(total)
record = {"gen": gen, "restart": int(os.environ["RINGRT_RESTART_COUNT"]), "world": world,
          "rank": rank, "node_rank": int(os.environ["NODE_RANK"]), "sum": float(total[0]),
          "started": time.time()}
write_record(os.path.join(out, f"gen{gen}-rank{rank}.json"), record)
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
