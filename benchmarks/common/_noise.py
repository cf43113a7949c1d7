"""How often the machine takes a core away from a running process: the noise under a tail.

A small collective's median is a few microseconds, so its tail is set less by the code than
by the machine: each time the kernel or, on a VM, the hypervisor interrupts a rank, every
peer of that op waits as long. :func:`interruptions` measures that directly: a loop that does
nothing but read the clock, where any gap between two readings well above the loop's own
step is time the process did not run. Benchmarks that report tails run it on every rank at
once (the ranks' cores busy, as during the ops) and keep the result next to the copy
bandwidth, so a p99 comes with the noise it was measured under;
``python -m benchmarks.overhead.machine_noise`` runs it alone on every core.

Pure Python on purpose (no compiler needed): a step of the loop takes well under 0.2 µs, so
gaps from 1 µs up are seen; shorter ones are not counted.
"""

from __future__ import annotations

import time
from collections import Counter

GAP_NS = 1_000                                   # a gap from 1 µs up counts
LONG_GAP_NS = 16_000                             # a tail-sized gap
BUCKETS_US = ((1, 4), (4, 16), (16, None))       # what the per-second counts are split by


def interruptions(seconds: float = 0.5) -> dict:
    """Gaps of ``GAP_NS`` and more in a clock-reading loop that runs ``seconds`` on this
    process's core: how many per second in each of ``BUCKETS_US`` (µs), the share of the time
    they took (%), the longest (µs), the loop's own step (ns, the time between readings
    that were not gaps), and for the gaps over ``LONG_GAP_NS``: their median size (µs) and
    their most common spacing (ms, to 0.1 ms: a periodic source such as the kernel's timer
    tick shows as its period; None with fewer than 3)."""
    clock = time.perf_counter_ns
    gaps: list[int] = []
    long_at: list[int] = []
    steps = 0
    start = previous = clock()
    end = start + int(seconds * 1e9)
    while previous < end:
        now = clock()
        if now - previous >= GAP_NS:
            gaps.append(now - previous)
            if now - previous >= LONG_GAP_NS:
                long_at.append(previous)
        previous = now
        steps += 1
    elapsed = (previous - start) / 1e9
    counts = {}
    for low, high in BUCKETS_US:
        name = f"{low}-{high}us" if high is not None else f">{low}us"
        hits = sum(1 for g in gaps if g >= low * 1000 and (high is None or g < high * 1000))
        counts[name] = round(hits / elapsed)
    return {"seconds": round(elapsed, 3), "per_s": counts,
            "total_per_s": round(len(gaps) / elapsed),
            "stolen_pct": round(sum(gaps) / (elapsed * 1e9) * 100, 2),
            "longest_us": round(max(gaps, default=0) / 1e3, 1),
            "loop_step_ns": round((previous - start - sum(gaps)) / max(steps - len(gaps), 1), 1),
            "long_gap_median_us": round(_median([g for g in gaps if g >= LONG_GAP_NS]) / 1e3, 1),
            "long_gap_period_ms": _common_spacing_ms(long_at)}


def _median(values: list) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2]) if ordered else 0.0


def _common_spacing_ms(times_ns: list[int]) -> float | None:
    """The most common spacing between consecutive times (ms, binned to 0.1 ms)."""
    if len(times_ns) < 3:
        return None
    bins = Counter(round((b - a) / 1e5) for a, b in zip(times_ns, times_ns[1:]))
    return bins.most_common(1)[0][0] / 10


def summary(noise: list[dict]) -> str:
    """One line for the ranks' measurements: the worst rank's rate and stolen share, and how
    often a gap over 16 µs (a tail-sized one) came."""
    if not noise:
        return "noise not measured"
    worst = max(noise, key=lambda n: n["stolen_pct"])
    long_gaps = max(n["per_s"][">16us"] for n in noise)
    periods = sorted({n["long_gap_period_ms"] for n in noise
                      if n.get("long_gap_period_ms") is not None})
    every = f" (mostly every {' / '.join(f'{p:g}' for p in periods)} ms)" if periods else ""
    return (f"cores interrupted up to {worst['total_per_s']:,}/s for 1 µs or more "
            f"({worst['stolen_pct']:.1f} % of the time), {long_gaps:,}/s over 16 µs{every}, "
            f"longest {max(n['longest_us'] for n in noise):,.0f} µs")


def on_every_rank(seconds: float = 0.3) -> list[dict]:
    """:func:`interruptions` on every rank of ringrt's default group at once (their cores
    busy together, as during the ops), gathered on every rank (list index: rank)."""
    import ringrt as dist

    dist.barrier()
    mine = interruptions(seconds)
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return everyone
