"""``RINGRT_DEBUG=1``: rank 0 logs each algorithm decision once per (op, size class).

Like ``NCCL_DEBUG=INFO``'s one line per choice, to stderr::

    ringrt[0]: all_reduce 1 MiB (size class 512 KiB-1 MiB) world 4 on one host -> shm
        (every rank on one host: shared memory; fits the 16 MiB slot in 1 MiB pieces)

A size class is a power-of-two range of the payload (the bytes ``choose`` weighs). The key
also holds the group's size and whether it spans hosts, so a subgroup's choices show too.
Off (the default), the cost is one attribute check (``pg.settings.debug``) per collective.
"""

from __future__ import annotations

import sys

from ringrt._algorithms import choice

_seen: set = set()


def log(pg, op: str, nbytes: int, decision: choice.Decision) -> None:
    """Print the decision if this is rank 0 and the (op, size class, group) is new."""
    if pg.global_rank != 0:
        return
    size_class = nbytes.bit_length()
    key = (op, size_class, pg.size, pg.spans_hosts)
    if key in _seen:
        return
    _seen.add(key)
    where = "across hosts" if pg.spans_hosts else "on one host"
    low = 0 if size_class == 0 else 1 << (size_class - 1)
    high = (1 << size_class) - 1
    print(f"ringrt[0]: {op} {_size(nbytes)} (size class {_size(low)}-{_size(high)}) world "
          f"{pg.size} {where} -> {decision.algorithm} ({explain(pg, op, nbytes, decision)})",
          file=sys.stderr, flush=True)


def explain(pg, op: str, nbytes: int, decision: choice.Decision) -> str:
    """``decision``'s reason, with the facts and thresholds behind it."""
    reason = decision.reason
    if reason == choice.FORCED:
        return reason
    if reason == choice.TWO_LEVEL:
        return _two_levels(pg, op, nbytes)
    if reason == choice.SHARED_MEMORY:
        return (f"{reason} through a {_size(pg.arena.slot_bytes)} staging slot per rank")
    notes = []
    if decision.declined_shm == choice.OVERSUBSCRIBED:
        start = choice.SHM_FROM_OVERSUBSCRIBED[op]
        notes.append(f"more ranks than cores: shared memory only from {_size(start)}")
    elif decision.declined_shm == choice.NO_SHM:
        notes.append(f"{choice.NO_SHM} (a subgroup, RINGRT_NO_SHM or tcp)")
    entry = choice.CHOICES[op]
    small, large = entry.small, entry.large
    if reason == choice.ONE_ALGORITHM:
        notes.append(f"{op} has one socket algorithm")
    elif reason == choice.CROSSOVER:
        threshold = choice.network_threshold(op, pg.size)
        side = "below" if nbytes < threshold else "at or above"
        notes.append(f"cost model (alpha {choice.NETWORK_ALPHA * 1e6:.0f} us, "
                     f"{1 / choice.NETWORK_BETA / 1e6:.0f} MB/s): {side} its {small}/{large} "
                     f"crossover {_size(threshold)} for {pg.size} ranks")
    else:
        side = "below" if nbytes < entry.threshold else "at or above"
        notes.append(f"{side} the {small}/{large} threshold {_size(entry.threshold)}")
    return "; ".join(notes)


def _two_levels(pg, op: str, nbytes: int) -> str:
    host_sizes = pg.layout.sizes
    sizes = "+".join(str(n) for n in host_sizes)
    extra = ""
    if op == "all_reduce":
        extra = f", all_reduce variant {choice.all_reduce_variant(nbytes, host_sizes, pg.settings)}"
    cores = pg.host_cores
    if cores:
        extra += f", hosts' cores {'+'.join(str(c) for c in cores)}"
    return (f"hosts of {sizes} ranks: two levels (inside each host, between hosts, back) "
            f"predicted faster than flat by more than {choice.TWO_LEVEL_MARGIN:.0%} by the "
            f"cost model{extra}")


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{nbytes} B"
