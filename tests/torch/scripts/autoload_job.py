"""A torch script with no ringrt import: ``python autoload_job.py BACKEND[;BACKEND...] [FILE]``.

Prints one JSON line: which ringrt modules ``import torch`` loaded, then for each backend
string the all_reduce of [rank + 1] * 3 over ``init_process_group(BACKEND)`` (env://, or a
world of 1 through ``file://FILE``), or the error it raised.
"""

import json
import sys

import torch
import torch.distributed as dist

report = {"after_import_torch": sorted(name for name in sys.modules if "ringrt" in name)}
kwargs = {"init_method": f"file://{sys.argv[2]}", "rank": 0, "world_size": 1} \
    if len(sys.argv) > 2 else {}
for backend in sys.argv[1].split(";"):
    try:
        dist.init_process_group(backend, **kwargs)
        tensor = torch.full((3,), float(dist.get_rank() + 1))
        dist.all_reduce(tensor)
        report[backend] = {"rank": dist.get_rank(), "world": dist.get_world_size(),
                           "total": tensor.tolist(), "backend": dist.get_backend()}
        dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001  (the test reads the error)
        report[backend] = {"error": type(exc).__name__, "message": str(exc)}
report["after_init"] = "ringrt.torch" in sys.modules
print("JOB " + json.dumps(report), flush=True)
