"""What a benchmark ran on: core count and measured memory-copy bandwidth.

Absolute times travel badly: the same VM kind copied memory at 26 GB/s one day and 12 GB/s
on a fresh instance the next, and every figure moved with it. So every record
carries :func:`describe`'s dict next to its figures, every printed table starts with
:func:`summary`'s line, and the ratios measured in the same run lead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import time
from pathlib import Path

import numpy as np

COPY_BYTES = 64 << 20          # well above any cache: this measures memory, not L2/L3
COPY_REPEATS = 5


def copy_bandwidth(nbytes: int = COPY_BYTES, repeats: int = COPY_REPEATS) -> float:
    """GB/s of the best of ``repeats`` NumPy copies of ``nbytes`` (bytes copied per second;
    the memory traffic is twice that: every byte is read and written)."""
    source = np.ones(nbytes, np.uint8)
    target = np.empty_like(source)
    np.copyto(target, source)                      # fault the pages in first
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return nbytes / best / 1e9


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


@functools.lru_cache(maxsize=1)
def describe() -> dict:
    """The machine, measured once per process: cores, copy bandwidth, CPU, kernel, Python."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:                          # not Linux
        usable = os.cpu_count()
    return {"cpus": os.cpu_count(), "cpus_usable": usable,
            "copy_gb_s": round(copy_bandwidth(), 2), "copy_bytes": COPY_BYTES,
            "cpu_model": cpu_model(), "kernel": platform.release(),
            "python": platform.python_version(), "host": platform.node()}


def summary(info: dict | None = None) -> str:
    """One line for the top of a table: '2 cores, NumPy copy 12.3 GB/s (Intel ...)'."""
    info = info or describe()
    cores = f"{info['cpus']} cores"
    if info.get("cpus_usable") not in (None, info["cpus"]):
        cores += f" ({info['cpus_usable']} usable)"
    return f"{cores}, NumPy copy {info['copy_gb_s']:.1f} GB/s ({info['cpu_model']})"
