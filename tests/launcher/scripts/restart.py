"""Rank 1 fails with exit code 5 on the first attempt; every rank succeeds on later ones."""

import os
import sys

attempt = int(os.environ["RINGRT_RESTART_COUNT"])
rank = int(os.environ["RANK"])
print(f"rank {rank} attempt {attempt}")
if attempt == 0 and rank == 1:
    sys.exit(5)
