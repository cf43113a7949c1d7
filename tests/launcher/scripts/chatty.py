"""Write LINES long lines to stdout (and a few to stderr) fast, then a line without newline."""

import os
import sys

lines, width = int(sys.argv[1]), int(sys.argv[2])
rank = os.environ["RANK"]
payload = rank * width
for i in range(lines):
    sys.stdout.write(f"rank {rank} line {i} {payload}\n")
    if i % 100 == 0:
        sys.stderr.write(f"rank {rank} err {i}\n")
sys.stdout.write(f"rank {rank} no newline at the end")
