"""What ringrt's ``torch.backends`` entry point adds to every ``import torch`` (issue 22).

Interleaved runs of a fresh ``python -c "import torch"`` with torch's backend autoload on (it
scans the ``torch.backends`` entry points and calls ringrt's ``_ringrt_autoload.register``)
and off (``TORCH_DEVICE_BACKEND_AUTOLOAD=0``: neither), so load from elsewhere hits both
alike; the difference of the medians bounds what the entry point costs (it includes torch's
own scan, which any installed backend plugin triggers). Then, in one process, the parts:
the entry-point scan, and importing and calling ``register`` (what torch does for ringrt)::

    python -m benchmarks.torch_autoload_cost --runs 30 --json benchmarks/results/torch_autoload_cost.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import click

from benchmarks import _machine

IMPORT = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
PARTS = """
import time, importlib.metadata, torch, torch.distributed as dist
t = time.perf_counter(); eps = list(importlib.metadata.entry_points(group="torch.backends"))
scan = time.perf_counter() - t
t = time.perf_counter(); import _ringrt_autoload; _ringrt_autoload.register()
hook = time.perf_counter() - t
assert "ringrt" in dist.Backend.backend_list and [e.name for e in eps] == ["ringrt"], eps
print(scan, hook)
"""


def import_seconds(autoload: bool) -> float:
    """Seconds a fresh interpreter spends in ``import torch`` (timed inside it)."""
    env = dict(os.environ, TORCH_DEVICE_BACKEND_AUTOLOAD="1" if autoload else "0")
    out = subprocess.run([sys.executable, "-c", IMPORT], env=env, capture_output=True,
                         text=True, check=True, cwd="/", timeout=120).stdout
    return float(out)


def parts() -> tuple[float, float]:
    env = dict(os.environ, TORCH_DEVICE_BACKEND_AUTOLOAD="0")
    out = subprocess.run([sys.executable, "-c", PARTS], env=env, capture_output=True,
                         text=True, check=True, cwd="/", timeout=120).stdout
    scan, hook = map(float, out.split())
    return scan, hook


@click.command()
@click.option("--runs", default=30, show_default=True, help="Runs of each, interleaved.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the record.")
def main(runs: int, json_path: str | None) -> None:
    info = _machine.describe()
    print(_machine.summary(info))
    import_seconds(True)                              # warm the page cache
    on, off = [], []
    for _ in range(runs):
        on.append(import_seconds(True))
        off.append(import_seconds(False))
    split = [parts() for _ in range(max(5, runs // 3))]
    record = {
        "machine": info, "runs": runs,
        "import_torch_ms": {"autoload_on": _stats(on), "autoload_off": _stats(off)},
        "added_ms_median": 1e3 * (statistics.median(on) - statistics.median(off)),
        "ratio_on_off_median": statistics.median(on) / statistics.median(off),
        "scan_entry_points_ms_median": 1e3 * statistics.median(s for s, _ in split),
        "register_hook_ms_median": 1e3 * statistics.median(h for _, h in split),
    }
    print(json.dumps(record["import_torch_ms"]))
    print(f"import torch, autoload on / off: {record['ratio_on_off_median']:.3f} "
          f"(+{record['added_ms_median']:.1f} ms median); entry-point scan "
          f"{record['scan_entry_points_ms_median']:.2f} ms, ringrt's hook "
          f"{record['register_hook_ms_median']:.2f} ms")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(record, f, indent=1)


def _stats(seconds: list[float]) -> dict:
    return {"median": 1e3 * statistics.median(seconds), "mean": 1e3 * statistics.mean(seconds),
            "min": 1e3 * min(seconds)}


if __name__ == "__main__":
    main()
