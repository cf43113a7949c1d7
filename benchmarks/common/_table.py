"""The arithmetic and the text of the collective benchmark: no sockets, no timing.

Sizes follow nccl-tests: ``size`` is the bytes of the whole array (the all_reduce/broadcast
buffer, the reduce_scatter input, the all_gather output), ``count`` its elements; each rank's
reduce_scatter output / all_gather input is ``count / world``. Bandwidths too:
``algbw = size / time`` and ``busbw = algbw * bus_factor`` (nccl-tests' PERFORMANCE.md), so
busbw is comparable across ops and world sizes. Times are in microseconds; ``time`` is the
median over iterations of the slowest rank's time, ``mean`` the mean of the same.
"""

from __future__ import annotations

import json
import math
import re
import statistics

from ringrt.tuning import cost_model

OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast")
REDUCING = ("all_reduce", "reduce_scatter")
BROADCAST_ROOT = 0

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str | int) -> int:
    """Bytes from '4', '16K', '64M', '1G' (binary units, as nccl-tests' -b/-e); also 'KiB'."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"size {text!r} is not a number of bytes like 4, 16K, 64M or 1G")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(nbytes: int) -> str:
    """'4', '16K', '64M': the largest binary unit that divides ``nbytes`` exactly."""
    for unit in ("G", "M", "K"):
        if nbytes >= _UNITS[unit] and nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return str(nbytes)


def sweep(min_bytes: int, max_bytes: int, factor: int = 2) -> list[int]:
    """Sizes from ``min_bytes`` multiplied by ``factor`` while <= ``max_bytes`` (nccl-tests -f)."""
    if factor < 2:
        raise ValueError(f"the step factor must be >= 2, got {factor}")
    if not 0 < min_bytes <= max_bytes:
        raise ValueError(f"need 0 < min-bytes <= max-bytes, got {min_bytes} and {max_bytes}")
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= factor
    return sizes


def element_count(op: str, nbytes: int, itemsize: int, world: int) -> int:
    """Elements of the whole array for a requested size: at least one per rank, and a
    multiple of the world for the ops that split the array (as nccl-tests rounds)."""
    count = max(1, nbytes // itemsize)
    if op in ("reduce_scatter", "all_gather"):
        count = max(world, count - count % world)
    return count


def bus_factor(op: str, world: int) -> float:
    """nccl-tests' factor from algorithm bandwidth to bus bandwidth (ringrt's cost model)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; choose from {', '.join(OPS)}")
    return cost_model.bus_factor(op, world)


def human(nbytes: int) -> str:
    """'64 KiB', '1.5 MiB', '12 B': three significant digits in the largest binary unit."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= 0.99 * size:            # 65532 B (3 blocks of 21844) reads as 64 KiB
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes} B"


def bandwidths(op: str, nbytes: int, seconds: float, world: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s (10**9 bytes per second) for ``nbytes`` moved in ``seconds``."""
    if seconds <= 0:
        return 0.0, 0.0
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * bus_factor(op, world)


def slowest_rank(per_rank_times: list[list[float]]) -> list[float]:
    """Each iteration's time is the slowest rank's: the element-wise max over ranks."""
    return [max(column) for column in zip(*per_rank_times, strict=True)]


STALL_FACTOR = 5          # an iteration over this many times the median is a stall


def summarize(seconds: list[float]) -> dict[str, float]:
    """Median, mean, min, max, p50 / p90 / p99 of per-iteration times (µs), and the tail:
    ``stalled`` iterations (over ``STALL_FACTOR`` x the median) and ``stalled_share``, the
    part of the total time they took."""
    if not seconds:
        raise ValueError("no iterations to summarize")
    micro = sorted(s * 1e6 for s in seconds)
    median = statistics.median(micro)
    stalls = [us for us in micro if us > STALL_FACTOR * median]
    total = math.fsum(micro)
    return {"median_us": median, "mean_us": statistics.fmean(micro),
            "min_us": micro[0], "max_us": micro[-1], "p50_us": median,
            "p90_us": _percentile(micro, 90), "p99_us": _percentile(micro, 99),
            "stalled": len(stalls), "stalled_share": math.fsum(stalls) / total if total else 0.0}


def _percentile(ordered: list[float], percent: float) -> float:
    """Linear interpolation between closest ranks (NumPy's default) of sorted values."""
    at = (len(ordered) - 1) * percent / 100
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def iterations(seconds_per_op: float, budget_s: float, lo: int, hi: int) -> int:
    """Timed iterations that fill ``budget_s``, within [lo, hi]: many for small messages,
    few for large ones. Every rank must pass the same ``seconds_per_op`` (the max)."""
    if seconds_per_op <= 0:
        return hi
    return max(lo, min(hi, math.ceil(budget_s / seconds_per_op)))


def warmup_iterations(nbytes: int) -> int:
    """Default warm-up: enough to fault the buffers in and settle the sockets."""
    if nbytes <= 64 << 10:
        return 10
    return 3 if nbytes <= 4 << 20 else 2


def ratio(ringrt_us: float | None, other_us: float | None) -> float | None:
    """ringrt's time over another system's (< 1: ringrt faster); None if either is missing."""
    if not ringrt_us or not other_us:
        return None
    return ringrt_us / other_us


# -- text ---------------------------------------------------------------------------------

_HEADER = (
    "#       size        count     type  redop  root  system       time       mean        p99"
    " stall    algbw    busbw  #wrong  ringrt/x\n"
    "#        (B)   (elements)                                     (us)       (us)       (us)"
    "  (5x)   (GB/s)   (GB/s)")


def _fmt_ratio(value: float | None) -> str:
    return f"{value:8.2f}" if value is not None else "       -"


def _fmt_time(us: float) -> str:
    return f"{us:10.1f}" if us < 1e5 else f"{us:10.0f}"


def format_row(rec: dict, ratio_to_ringrt: float | None = None) -> str:
    """One nccl-tests style row for a record (see :func:`record`); records written before
    the tails were kept show ``-`` for p99 and stalls."""
    p99 = _fmt_time(rec["p99_us"]) if "p99_us" in rec else f"{'-':>10}"
    stalled = f"{rec['stalled']:5d}" if "stalled" in rec else f"{'-':>5}"
    return (f"{rec['bytes']:12d} {rec['count']:12d} {rec['dtype']:>8} {rec['redop']:>6} "
            f"{rec['root']:5d}  {rec['system']:<8} {_fmt_time(rec['median_us'])} "
            f"{_fmt_time(rec['mean_us'])} {p99} {stalled} {rec['algbw']:8.3f} "
            f"{rec['busbw']:8.3f} {rec['wrong']:7d}  {_fmt_ratio(ratio_to_ringrt)}")


def format_table(records: list[dict]) -> str:
    """The per-op tables of one run: every system at a size on consecutive rows, with the
    ratio of ringrt's median time to each other system's."""
    lines = []
    for (op, world, dtype), group in _groups(records, ("op", "world", "dtype")).items():
        lines.append(f"# {op}  world {world}  {dtype}   time = median over iterations of the "
                     "slowest rank; ringrt/x = ringrt time / x time (< 1: ringrt faster)")
        lines.append(_HEADER)
        for size_records in _groups(group, ("bytes",)).values():
            base = _find_ringrt(size_records)
            for rec in size_records:
                other = None if is_ringrt(rec["system"]) or base is None else rec
                lines.append(format_row(rec, other and ratio(base["median_us"],
                                                             other["median_us"])))
        lines.append("")
    return "\n".join(lines)


def shm_lines(records: list[dict]) -> str:
    """Shared-memory waits per size and system on ringrt, summed over ranks (records that
    have them)."""
    counted = [r for r in records if r.get("shm")]
    if not counted:
        return ""
    lines = ["# ringrt shm waits over the timed loops, all ranks: size system: waits / sleeps "
             + "/ timeouts / missed wake-ups"]
    lines += [f"#   {format_size(r['bytes']):>6} {r['system']}: {r['shm']['waits']} / "
              f"{r['shm']['sleeps']} / {r['shm']['timeouts']} / {r['shm']['missed_wakeups']}"
              for r in counted]
    return "\n".join(lines) + "\n"


def compare_table(records: list[dict]) -> str:
    """Merged runs, one row per (size, run): ringrt/x ratios within the run first (every
    system of a run was measured in turns at each size, so a burst of load from elsewhere
    hits them alike, and ratios travel between machines where absolute times do not), then
    that run's median µs for ringrt, gloo and its MPI system."""
    lines = []
    for (op, world, dtype), group in _groups(records, ("op", "world", "dtype")).items():
        lines.append(f"# {op}  world {world}  {dtype}: r/x = ringrt/x in the same run (< 1: "
                     "ringrt faster); then median time (us) of the slowest rank")
        lines.append(f"# {'size':>6}  {'run':<16} {'r/gloo':>7} {'r/mpi':>7} {'ringrt':>10} "
                     f"{'gloo':>10} {'mpi':>10} {'(mpi)':<6}")
        for (nbytes, run), row in _groups(group, ("bytes", "run")).items():
            base = _find_ringrt(row)
            gloo = next((r for r in row if r["system"] == "gloo"), None)
            mpi = next((r for r in row if r["system"].startswith("mpi")), None)
            cells = [_cell(rec, 10, 1) for rec in (base, gloo, mpi)]
            ratios = [_cell(other and base and ratio(base["median_us"], other["median_us"]), 7, 2)
                      for other in (gloo, mpi)]
            lines.append(f"  {format_size(nbytes):>6}  {run:<16} {' '.join(ratios)} "
                         f"{' '.join(cells)} {mpi['system'][4:] if mpi else '-':<6}")
        lines.append("")
    return "\n".join(lines)


def _cell(value, width: int, digits: int) -> str:
    if isinstance(value, dict):
        value = value["median_us"]
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def is_ringrt(system: str) -> bool:
    """ringrt's rows are 'ringrt' or a variant label such as 'ringrt-zmq'."""
    return system.startswith("ringrt")


def _find_ringrt(records: list[dict]) -> dict | None:
    return next((r for r in records if is_ringrt(r["system"])), None)


def _groups(records: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """Records grouped by ``keys``, groups in first-seen order (sizes stay ascending)."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault(tuple(rec[k] for k in keys), []).append(rec)
    return groups


def record(*, system: str, op: str, world: int, nbytes: int, count: int, dtype: str,
           seconds: list[float], warmup: int, wrong: int, run: str = "",
           shm: dict | None = None) -> dict:
    """The JSON record of one measured point (the table and the plot read these); ``shm``:
    ringrt's shared-memory wait counters during the timed iterations, summed over ranks."""
    stats = summarize(seconds)
    algbw, busbw = bandwidths(op, nbytes, stats["median_us"] / 1e6, world)
    return {"run": run, "system": system, "op": op, "world": world, "bytes": nbytes,
            "count": count, "dtype": dtype, "redop": "sum" if op in REDUCING else "none",
            "root": BROADCAST_ROOT if op == "broadcast" else -1, "iters": len(seconds),
            "warmup": warmup, **stats, "algbw": algbw, "busbw": busbw, "wrong": wrong,
            **({"shm": shm} if shm is not None else {})}


def json_text(doc: dict) -> str:
    """``doc`` as JSON with one line per element of each top-level list (the records, the
    runs), so results committed to git diff line by line."""
    parts = []
    for key, value in doc.items():
        if isinstance(value, list):
            body = ",\n".join("  " + json.dumps(item) for item in value)
            parts.append(f" {json.dumps(key)}: [\n{body}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"
