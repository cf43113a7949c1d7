"""Load held: run many ops of each kind and watch the process's resources.

::

    ringrun -n 2 -m benchmarks.robustness.soak_load --ops 100000 --json benchmarks/results/soak_load.json
    make soak-load                          # the same, NumPy API then torch backend

Every rank runs ``--ops`` ops of each kind (NumPy API, or with ``--api torch`` the torch
backend "ringrt"; small messages of 256 B and large ones of 256 KiB, above the 64 KiB inline
limit) and samples, about 50 times per kind, its resident memory (RSS), open file
descriptors, threads (the kernel's count: zmq's io threads included) and shared memory
(bytes of ``/dev/shm`` mappings, deleted segments included, and its ``/dev/shm/ringrt-PID-*``
files). :func:`flatness` then judges each series after a warm-up (the first 10 % of ops):
descriptors, threads and shared memory must not move at all, and memory must neither trend
up (least-squares slope times the ops measured) nor set a new high in the last third, each
by more than ``RSS_TOLERANCE``. The same check runs in ``make test`` on a few thousand ops
(tests/unit/test_soak_load.py, which also shows it catches a leak of 1 KiB per op).

No timings are reported, so no baseline is needed; each record states the machine anyway.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import click
import numpy as np

SMALL, LARGE = 64, 64 * 1024                  # float32 elements: 256 B and 256 KiB
SAMPLES = 50                                  # per kind and rank
WARMUP = 0.1                                  # fraction of each kind's ops not judged
RSS_TOLERANCE = 1 << 20                       # bytes: ~35x the trend of 2,000 flat ops (28 KiB)
NUMPY_KINDS = ("all_reduce/small", "all_reduce/large", "broadcast/small", "broadcast/large",
               "all_gather/small", "send_recv/small", "send_recv/large",
               "all_gather_object/small")
TORCH_KINDS = ("all_reduce/small", "all_reduce/large", "broadcast/small", "broadcast/large",
               "all_gather/small")
_PAGE = resource.getpagesize()


# --- what one process holds --------------------------------------------------------------


def sample() -> dict:
    """This process's RSS, open descriptors, threads and shared memory, right now."""
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * _PAGE
    with open("/proc/self/status") as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return {"rss": rss, "fds": len(os.listdir("/proc/self/fd")), "threads": threads,
            "shm_bytes": _shm_mapped(), "shm_files": _shm_files()}


def _shm_mapped() -> int:
    total = 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "/dev/shm/" in line:
                start, stop = line.split(None, 1)[0].split("-")
                total += int(stop, 16) - int(start, 16)
    return total


def _shm_files() -> int:
    prefix = f"ringrt-{os.getpid()}-"
    try:
        return sum(name.startswith(prefix) for name in os.listdir("/dev/shm"))
    except OSError:
        return 0


# --- the judgement -------------------------------------------------------------------------


def flatness(samples: list[dict], ops: int) -> dict:
    """Judge one kind's samples (each ``{"op": i, **sample()}``) on one rank.

    Returns:
        ``{"flat": bool, "why": [...], "rss_growth": bytes, "rss_new_high": bytes, ...}``:
        the RSS trend (slope x ops measured) and how far the last third rose above the
        highest sample before it; for descriptors, threads and shared memory, their range.
    """
    judged = [s for s in samples if s["op"] >= ops * WARMUP]
    why = []
    if len(judged) < 20:
        why.append(f"only {len(judged)} samples after the warm-up (need 20)")
        judged = judged or samples
    ops_seen = np.array([s["op"] for s in judged], np.float64)
    rss = np.array([s["rss"] for s in judged], np.float64)
    slope = np.polyfit(ops_seen, rss, 1)[0] if len(judged) > 1 else 0.0
    growth = float(slope * (ops_seen[-1] - ops_seen[0])) if len(judged) > 1 else 0.0
    third = max(1, len(judged) // 3)
    new_high = float(rss[-third:].max() - rss[:-third].max()) if len(judged) > third else 0.0
    if growth > RSS_TOLERANCE:
        why.append(f"RSS trends up by {growth / 2**20:.1f} MiB over {ops_seen[-1]:.0f} ops")
    if new_high > RSS_TOLERANCE:
        why.append(f"RSS set a new high {new_high / 2**20:.1f} MiB above the earlier ones")
    ranges = {}
    for name in ("fds", "threads", "shm_bytes", "shm_files"):
        values = [s[name] for s in judged]
        ranges[name] = [min(values), max(values)]
        if max(values) != min(values):
            why.append(f"{name} moved from {values[0]} to {values[-1]} "
                       f"(range {min(values)}..{max(values)})")
    return {"flat": not why, "why": why, "rss_growth": round(growth),
            "rss_new_high": round(new_high), "rss_first": int(rss[0]), "rss_last": int(rss[-1]),
            **ranges, "samples": len(judged)}


# --- the loops -----------------------------------------------------------------------------


def _numpy_op(kind: str, rank: int, world: int):
    """A zero-argument function running one op of ``kind``, and a check of its last result."""
    import ringrt as dist

    op, size = kind.split("/")
    count = SMALL if size == "small" else LARGE
    data = np.ones(count, np.float32)
    out = np.empty(count * world, np.float32)
    peer = rank ^ 1 if (rank ^ 1) < world else rank
    gathered = [None] * world
    if op == "all_reduce":
        def run():
            data.fill(1)
            dist.all_reduce(data)
        return run, lambda: bool((data == world).all())
    if op == "broadcast":
        def run():
            data.fill(rank)
            dist.broadcast(data, src=0)
        return run, lambda: bool((data == 0).all())
    if op == "all_gather":
        def run():
            dist.all_gather_into_tensor(out, data)
        return run, lambda: bool((out == 1).all())
    if op == "send_recv":
        received = np.empty(count, np.float32)

        def run():
            if peer == rank:
                return
            if rank % 2 == 0:
                dist.send(data, peer)
                dist.recv(received, peer)
            else:
                dist.recv(received, peer)
                dist.send(data, peer)
        return run, lambda: peer == rank or bool((received == 1).all())
    if op == "all_gather_object":
        def run():
            dist.all_gather_object(gathered, {"rank": rank, "step": (1, "x")})
        return run, lambda: [g["rank"] for g in gathered] == list(range(world))
    raise ValueError(f"unknown kind {kind!r}")


def _torch_op(kind: str, rank: int, world: int):
    import torch
    import torch.distributed as tdist

    op, size = kind.split("/")
    count = SMALL if size == "small" else LARGE
    data = torch.ones(count)
    out = torch.empty(count * world)
    if op == "all_reduce":
        def run():
            data.fill_(1)
            tdist.all_reduce(data)
        return run, lambda: bool((data == world).all())
    if op == "broadcast":
        def run():
            data.fill_(rank)
            tdist.broadcast(data, src=0)
        return run, lambda: bool((data == 0).all())
    if op == "all_gather":
        def run():
            tdist.all_gather_into_tensor(out, data)
        return run, lambda: bool((out == 1).all())
    raise ValueError(f"unknown kind {kind!r}")


def soak(api: str, kinds, ops: int, rank: int, world: int, leak_bytes: int = 0) -> dict:
    """Run ``ops`` ops of every kind on this rank (the group must be initialised); returns
    ``{kind: {"samples": [...], "correct": bool, "seconds": s}}``. ``leak_bytes`` leaks that
    much per op on purpose (the test that the check catches a leak)."""
    make = _numpy_op if api == "numpy" else _torch_op
    every = max(1, ops // SAMPLES)
    results, hoard = {}, []
    for kind in kinds:
        run, correct = make(kind, rank, world)
        samples, started = [], time.monotonic()
        for i in range(ops):
            run()
            if leak_bytes:
                hoard.append(bytearray(leak_bytes))
            if i % every == every - 1:
                samples.append({"op": i + 1, **sample()})
        results[kind] = {"samples": samples, "correct": correct(),
                         "seconds": round(time.monotonic() - started, 2)}
    return results


def judge(per_rank: list[dict], ops: int) -> dict:
    """``{kind: {"flat": all ranks flat, "correct": ..., "ranks": [flatness per rank]}}``."""
    table = {}
    for kind in per_rank[0]:
        verdicts = [flatness(r[kind]["samples"], ops) for r in per_rank]
        table[kind] = {"flat": all(v["flat"] for v in verdicts),
                       "correct": all(r[kind]["correct"] for r in per_rank),
                       "seconds": max(r[kind]["seconds"] for r in per_rank),
                       "ranks": verdicts}
    return table


# --- the command ---------------------------------------------------------------------------


@click.command()
@click.option("--ops", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Ops of each kind.")
@click.option("--api", type=click.Choice(["numpy", "torch"]), default="numpy", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Add this run's record to a JSON file (one key per API).")
def main(ops: int, api: str, json_path: str | None) -> None:
    """Run the soak on every rank of this ringrun job (see the module docstring)."""
    rank, world = _init(api)
    results = soak(api, NUMPY_KINDS if api == "numpy" else TORCH_KINDS, ops, rank, world)
    per_rank = _gather(api, results, world)
    if rank == 0:
        table = judge(per_rank, ops)
        _print(api, ops, world, table)
        if json_path:
            _record(json_path, api, ops, world, table)
    _finish(api)
    if rank == 0 and not all(row["flat"] and row["correct"] for row in table.values()):
        raise SystemExit(1)


def _init(api: str) -> tuple[int, int]:
    if api == "torch":
        import torch.distributed as tdist

        import ringrt.torch  # noqa: F401 - registers the backend
        tdist.init_process_group("ringrt")
        return tdist.get_rank(), tdist.get_world_size()
    import ringrt as dist

    dist.init_process_group()
    return dist.get_rank(), dist.get_world_size()


def _gather(api: str, results: dict, world: int) -> list[dict]:
    gathered = [None] * world
    if api == "torch":
        import torch.distributed as tdist
        tdist.all_gather_object(gathered, json.dumps(results))
    else:
        import ringrt as dist
        dist.all_gather_object(gathered, json.dumps(results))
    return [json.loads(g) for g in gathered]


def _finish(api: str) -> None:
    if api == "torch":
        import torch.distributed as tdist
        tdist.destroy_process_group()
    else:
        import ringrt as dist
        dist.destroy_process_group()


def _print(api: str, ops: int, world: int, table: dict) -> None:
    from benchmarks.common import _machine

    click.echo(f"# load held: {ops:,} ops per kind, {api}, world {world}\n"
               f"# machine: {_machine.summary()}\n"
               f"{'kind':<24} {'flat':>4} {'ok':>3} {'s':>6} {'RSS MiB':>13} "
               f"{'trend KiB':>9} {'fds':>7} {'threads':>7} {'shm MiB':>7}")
    for kind, row in table.items():
        r = max(row["ranks"], key=lambda v: v["rss_growth"])      # the worst rank
        click.echo(f"{kind:<24} {'yes' if row['flat'] else 'NO':>4} "
                   f"{'yes' if row['correct'] else 'NO':>3} {row['seconds']:>6.1f} "
                   f"{r['rss_first'] / 2**20:>6.1f}>{r['rss_last'] / 2**20:>6.1f} "
                   f"{r['rss_growth'] / 1024:>9.0f} {_span(r['fds']):>7} "
                   f"{_span(r['threads']):>7} {_span(r['shm_bytes'], 2**20):>7}")
        for why in (w for v in row["ranks"] for w in v["why"]):
            click.echo(f"    {why}")


def _span(bounds, unit: int = 1) -> str:
    low, high = (round(b / unit) for b in bounds)
    return f"{low}" if low == high else f"{low}..{high}"


def _record(path: str, api: str, ops: int, world: int, table: dict) -> None:
    from benchmarks.common import _machine

    file = Path(path)
    record = json.loads(file.read_text()) if file.exists() else {}
    record[api] = {"ops_per_kind": ops, "world": world, "machine": _machine.describe(),
                   "kinds": table}
    file.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
