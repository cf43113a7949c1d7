"""Fit the two-level model's local costs on the committed netlab runs, and check its picks.

    .venv/bin/python -m benchmarks.cluster.fit_two_level [JSON ...]

Reads ``benchmarks/results/cluster-hier-3x*.json`` (or the files given; runs that force a
two-level variant are skipped). Fits, on a grid and with the network parameters of
ringrt's choice (``ringrt.tuning.NETWORK``) fixed, ``LOCAL_ALPHA`` (a shared-memory phase) and
``LOCAL_STEP_ALPHA`` (a flat step between ranks of one host) on the flat recursive-doubling
and two-level all_reduces up to 4 KiB, then ``EMPTY_STEP`` on the barriers (least rms relative
error). Then, for every op and size measured both in two levels and with the flat algorithm
ringrt would run, prints measured and predicted ms, the ratio two-level / flat measured and
predicted, what ringrt picks with the committed constants, and whether that pick was slower
than flat (``SLOWER``: > 3 % slower) or left a measured gain > 3 % (``missed``).
"""

from __future__ import annotations

import glob
import json
import sys

import numpy as np

from ringrt import tuning
from ringrt.tuning import cost_model as cm

NET = tuning.NETWORK
FIT_UP_TO = 4096


def cases(paths: list[str]) -> dict[tuple, dict]:
    """(sizes, op, nbytes) -> {"cores": per host, algorithm ran: [median ms, ...]}."""
    found: dict[tuple, dict] = {}
    for path in paths:
        record = json.load(open(path))
        if record.get("env", {}).get("RINGRT_TWO_LEVEL") or "direct" in path:
            continue                                   # a forced variant's run
        for run in record["runs"]:
            if "--delay" in run["profile"]:
                continue
            counts: dict[str, int] = {}
            for host in run["hosts"]:
                counts[host] = counts.get(host, 0) + 1
            sizes = tuple(counts.values())
            for r in run["results"]:
                case = found.setdefault((sizes, r["op"], r["nbytes"]),
                                        {"cores": (run["machine"]["cpus_usable"],) * len(sizes)})
                case.setdefault(r["chosen"], []).append(r["median_s"] * 1e3)
    return found


def flat_ms(sizes, op, nbytes, cores, algorithm) -> float:
    return cm.predict_flat_on_hosts(op, algorithm, nbytes, sizes, *NET, cores=cores,
                                    local_step=cm.LOCAL_STEP_ALPHA) * 1e3


def two_ms(sizes, op, nbytes, cores) -> float:
    variant = "leaders" if op == "all_reduce" else None
    return cm.predict_two_level(op, nbytes, sizes, *NET, local_alpha=cm.LOCAL_ALPHA,
                                variant=variant, cores=cores) * 1e3


def _rms(found, ops) -> float:
    errors = []
    for (sizes, op, nbytes), case in found.items():
        if op not in ops or nbytes > FIT_UP_TO:
            continue
        for ran, predict in (("recursive_doubling", lambda: flat_ms(
                sizes, op, nbytes, case["cores"], "recursive_doubling")),
                ("hierarchical", lambda: two_ms(sizes, op, nbytes, case["cores"]))):
            errors += [predict() / t - 1 for t in case.get(ran, [])]
    return float(np.sqrt(np.mean(np.square(errors))))


def fit(found) -> None:
    """Grid fits, printed (the module constants are restored afterwards)."""
    saved = cm.LOCAL_ALPHA, cm.LOCAL_STEP_ALPHA, cm.EMPTY_STEP
    try:
        grid = [(_rms(found, ("all_reduce",)), a, s) for a in np.arange(0.1e-3, 0.6e-3, 0.01e-3)
                for s in np.arange(0.0, 0.6e-3, 0.01e-3)
                if not setattr(cm, "LOCAL_ALPHA", a) and not setattr(cm, "LOCAL_STEP_ALPHA", s)]
        rms, cm.LOCAL_ALPHA, cm.LOCAL_STEP_ALPHA = min(grid)
        print(f"all_reduce <= 4 KiB: LOCAL_ALPHA {cm.LOCAL_ALPHA * 1e3:.2f} ms, "
              f"LOCAL_STEP_ALPHA {cm.LOCAL_STEP_ALPHA * 1e3:.2f} ms, rms error {rms:.1%}")
        grid = [(_rms(found, ("barrier",)), e) for e in np.arange(0.5, 1.2, 0.01)
                if not setattr(cm, "EMPTY_STEP", e)]
        rms, empty = min(grid)
        print(f"barrier: EMPTY_STEP {empty:.2f}, rms error {rms:.1%}")
    finally:
        cm.LOCAL_ALPHA, cm.LOCAL_STEP_ALPHA, cm.EMPTY_STEP = saved
    print(f"committed: LOCAL_ALPHA {cm.LOCAL_ALPHA * 1e3:.2f} ms, LOCAL_STEP_ALPHA "
          f"{cm.LOCAL_STEP_ALPHA * 1e3:.2f} ms, EMPTY_STEP {cm.EMPTY_STEP:.2f}, "
          f"TWO_LEVEL_MARGIN {tuning.TWO_LEVEL_MARGIN:.0%}; rms error all_reduce "
          f"{_rms(found, ('all_reduce',)):.1%}, barrier {_rms(found, ('barrier',)):.1%}")


def picks(found) -> None:
    print("layout op          bytes      flat (algorithm)         ms (pred)     two ms (pred)"
          "       ratio meas / pred   pick")
    for (sizes, op, nbytes), case in sorted(found.items()):
        flat = tuning.flat_across_hosts(op, nbytes, sum(sizes))
        if "hierarchical" not in case or flat not in case:
            continue
        f, t = np.median(case[flat]), np.median(case["hierarchical"])
        pf, pt = flat_ms(sizes, op, nbytes, case["cores"], flat), two_ms(sizes, op, nbytes,
                                                                          case["cores"])
        two = tuning.two_level(op, nbytes, sizes, case["cores"])
        verdict = "SLOWER" if two and t > 1.03 * f else "missed" if not two and t < 0.97 * f \
            else ""
        print(f"{len(sizes)}x{max(sizes)}    {op:10} {nbytes:9}  {flat:19} {f:8.2f} ({pf:8.2f})"
              f"  {t:8.2f} ({pt:8.2f})  {t / f:5.2f} / {pt / pf:5.2f}   "
              f"{'two' if two else 'flat'} {verdict}")


def main(paths: list[str]) -> None:
    found = cases(paths or sorted(glob.glob("benchmarks/results/cluster-hier-3x*.json")))
    fit(found)
    picks(found)


if __name__ == "__main__":
    main(sys.argv[1:])
