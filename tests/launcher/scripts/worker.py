"""A worker for failure tests: records its pid, then fails or sleeps as told.

    worker.py [--fail-rank R (--exit-code C | --sigkill)] [--ignore-sigterm-rank R]
              [--grandchild-rank R]

The failing rank waits until every local worker runs, writes a line to stderr, then exits with C
or SIGKILLs itself; every other rank sleeps until it is stopped.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

from _pids import record_pid, wait_for_workers

parser = argparse.ArgumentParser()
parser.add_argument("--fail-rank", type=int, default=-1)
parser.add_argument("--exit-code", type=int, default=1)
parser.add_argument("--sigkill", action="store_true")
parser.add_argument("--ignore-sigterm-rank", type=int, default=-1)
parser.add_argument("--grandchild-rank", type=int, default=-1)
args = parser.parse_args()
rank = int(os.environ["RANK"])

if rank == args.ignore_sigterm_rank:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if rank == args.grandchild_rank:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              "launcher-test-grandchild"])
    record_pid(f"grandchild{rank}", child.pid)
record_pid(f"rank{rank}")
print(f"rank {rank} running", flush=True)

if rank == args.fail_rank:
    wait_for_workers()
    print(f"rank {rank} is about to fail on purpose", file=sys.stderr, flush=True)
    if args.sigkill:
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(args.exit_code)
time.sleep(120)
