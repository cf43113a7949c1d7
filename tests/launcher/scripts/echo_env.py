"""Print what the launcher gave this worker as one JSON line; one line to stderr too."""

import json
import os
import sys

KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR",
        "MASTER_PORT", "RINGRT_TOKEN", "RINGRT_RESTART_COUNT", "RINGRT_STORE_HOSTED",
        "RINGRT_TIMEOUT", "RINGRT_IPC_DIR", "OMP_NUM_THREADS", "PYTHONUNBUFFERED")

report = {
    "env": {key: os.environ.get(key) for key in KEYS},
    "argv": sys.argv[1:],
    "affinity": sorted(os.sched_getaffinity(0)),
    "module": __name__ == "__main__" and __spec__ is not None and __spec__.name,
}
print("ENV " + json.dumps(report))
print(f"stderr line from rank {os.environ['RANK']}", file=sys.stderr)
