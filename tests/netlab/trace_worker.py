"""Rank-side script of tests/netlab/test_trace.py: a few all_reduces and a barrier, traced.

Writes its pid to ``$NETLAB_TEST_OUT/pid{R}`` and ``rank{R}.json`` (the test checks that
every worker is gone at the end).
"""

import json
import os
from pathlib import Path

import numpy as np

import ringrt as dist

dist.init_process_group()
rank = dist.get_rank()
out = Path(os.environ["NETLAB_TEST_OUT"])
(out / f"pid{rank}").write_text(str(os.getpid()))
x = np.ones(1024, dtype=np.float32)
for _ in range(5):
    dist.all_reduce(x)
dist.barrier()
(out / f"rank{rank}.json").write_text(json.dumps({"sum": float(x[0])}))
dist.destroy_process_group()
