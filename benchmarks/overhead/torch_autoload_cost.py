"""What ringrt's ``torch.backends`` entry point adds to every ``import torch``.

Interleaved runs of a fresh ``python -c "import torch"`` in three ways, so load from
elsewhere hits them alike: ``ringrt`` (autoload on: torch scans the ``torch.backends`` entry
points and calls ringrt's ``_ringrt_autoload.register``), ``no entry point`` (autoload on,
ringrt's entry point filtered out of the scan: torch without ringrt installed) and ``off``
(``TORCH_DEVICE_BACKEND_AUTOLOAD=0``: no scan at all). ringrt's cost is ``ringrt`` minus
``no entry point``. Then, in one process, the parts: the entry-point scan, and importing and
calling ``register`` (what torch does for ringrt)::

    python -m benchmarks.overhead.torch_autoload_cost --runs 30 --json benchmarks/results/torch_autoload_cost.json
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import click

from benchmarks.common import _machine

IMPORT = """
import importlib.metadata as md, os, time
if os.environ.get("HIDE_RINGRT"):
    every = md.entry_points
    md.entry_points = lambda **kw: md.EntryPoints(
        e for e in every(**kw) if not e.value.startswith("_ringrt_autoload"))
t = time.perf_counter()
import torch
print(time.perf_counter() - t)
"""
WAYS = {"ringrt": {}, "no entry point": {"HIDE_RINGRT": "1"},
        "off": {"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}}
PARTS = """
import time, importlib.metadata, torch, torch.distributed as dist
t = time.perf_counter(); eps = list(importlib.metadata.entry_points(group="torch.backends"))
scan = time.perf_counter() - t
t = time.perf_counter(); import _ringrt_autoload; _ringrt_autoload.register()
hook = time.perf_counter() - t
assert "ringrt" in dist.Backend.backend_list and [e.name for e in eps] == ["ringrt"], eps
print(scan, hook)
"""


def import_seconds(way: str) -> float:
    """Seconds a fresh interpreter spends in ``import torch`` (timed inside it)."""
    env = {**os.environ, "TORCH_DEVICE_BACKEND_AUTOLOAD": "1", **WAYS[way]}
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
    import_seconds("ringrt")                          # warm the page cache
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(runs):
        for way in WAYS:
            times[way].append(import_seconds(way))
    split = [parts() for _ in range(max(5, runs // 3))]
    ringrt = statistics.median(times["ringrt"])
    without = statistics.median(times["no entry point"])
    record = {
        "machine": info, "runs": runs,
        "import_torch_ms": {way: _stats(seconds) for way, seconds in times.items()},
        "added_ms_median": 1e3 * (ringrt - without),
        "ratio_median": ringrt / without,
        "paired_diff_ms_median": 1e3 * statistics.median(
            a - b for a, b in zip(times["ringrt"], times["no entry point"])),
        "scan_entry_points_ms_median": 1e3 * statistics.median(s for s, _ in split),
        "register_hook_ms_median": 1e3 * statistics.median(h for _, h in split),
    }
    print(json.dumps(record["import_torch_ms"]))
    print(f"import torch, with ringrt's entry point / without: {record['ratio_median']:.3f} "
          f"({record['added_ms_median']:+.1f} ms between medians, "
          f"{record['paired_diff_ms_median']:+.1f} ms median of paired runs); entry-point scan "
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
