"""Rank-side runner of the test harness: ``python -m tests._rank MODULE:FUNC RANK OUTDIR ARGS``.

Calls ``FUNC(rank, world_size, **args)`` and writes what it returns: NumPy arrays to
``rank{R}.npz`` and everything else (JSON values) to ``rank{R}.json``. Never pickles.
"""

import ctypes
import faulthandler
import importlib
import json
import os
import signal
import sys

import numpy as np


def _die_with_parent():
    """Ask Linux to SIGKILL this rank if the harness (our parent) dies first."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)          # PR_SET_PDEATHSIG = 1
    except OSError:
        pass
    if os.getppid() == 1:                      # parent already gone before prctl took effect
        os._exit(1)


def _save(outdir: str, rank: int, result) -> None:
    if result is None:
        return
    arrays = {k: v for k, v in result.items() if isinstance(v, np.ndarray)}
    values = {k: v for k, v in result.items() if not isinstance(v, np.ndarray)}
    if arrays:
        tmp = os.path.join(outdir, f"rank{rank}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, os.path.join(outdir, f"rank{rank}.npz"))
    if values:
        tmp = os.path.join(outdir, f"rank{rank}.tmp.json")
        with open(tmp, "w") as f:
            json.dump(values, f)
        os.replace(tmp, os.path.join(outdir, f"rank{rank}.json"))


def main():
    _die_with_parent()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    target, rank, outdir, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    result = func(rank, int(os.environ["WORLD_SIZE"]), **args)
    _save(outdir, rank, result)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
