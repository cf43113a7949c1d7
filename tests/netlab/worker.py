"""Rank-side script of the netlab tests, started by ``ringrun`` on every lab host.

``python worker.py MODE [OPTIONS]``; results go to ``$NETLAB_TEST_OUT/rank{R}.json`` and the
worker's pid to ``pid{R}`` (the test checks every one is gone at the end). Modes:

- ``check``: the collective case table of tests/dist under several algorithm settings, plus
  point-to-point, object collectives and subgroups; each result is checked here against NumPy
  on the regenerated inputs of every rank. Records this rank's routes (ipc/tcp per peer).
- ``workload``: a short fixed mix (small collectives of every kind + 1 MiB all_reduces),
  checked, and timed (slowest rank): for runs under loss or Wi-Fi shaping.
- ``attacked``: tests/security's checked workload while a tokenless attacker attacks.
- ``hierarchical``: the table (a few dtypes, big cases) forced two-level and forced flat,
  plus a subgroup spanning hosts; with ``--layout 2,1,3`` the ranks first claim hosts of
  those sizes (``RINGRT_HOST_ID``), so the world is uneven although ringrun starts 2 per host.
- ``loop``: all_reduce until the group breaks; writes ``ready{R}`` after the first op so the
  test knows when to cut a host, then records the error (type, ranks, time) and re-raises it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

import ringrt as dist
from ringrt import errors
from tests.dist.cases import Case, cases, expected_for_rank, same_bits
from tests.dist.workers import run_case

OUT = Path(os.environ["NETLAB_TEST_OUT"])
RANK = int(os.environ["RANK"])

# Algorithm settings the ``check`` mode runs the table under (RINGRT_ALGO and the segment size
# are read at every op, so one process can go through all of them).
SETTINGS = {
    "default": {},
    "bandwidth": {"RINGRT_ALGO": "all_reduce=ring,broadcast=chain,reduce=ring,all_gather=ring,"
                                 "reduce_scatter=ring", "RINGRT_SEGMENT_BYTES": "65536"},
    "latency": {"RINGRT_ALGO": "all_reduce=recursive_doubling,broadcast=binomial,"
                               "reduce=binomial,all_gather=direct,reduce_scatter=direct"},
}
QUICK_DTYPES = ("float32", "int64", "bool")


def write(name: str, value) -> None:
    """Write ``OUT/name`` atomically (the test polls for it)."""
    tmp = OUT / f".{name}.tmp"
    tmp.write_text(value if isinstance(value, str) else json.dumps(value))
    os.replace(tmp, OUT / name)


def routes() -> dict[str, str]:
    from ringrt.distributed import _world  # debug accessor: the transport's route table

    return {str(peer): kind for peer, kind in _world.comm.transport.routes.items()}


def wrong(case: Case, world: int, got: np.ndarray) -> bool:
    want = expected_for_rank(case, world, RANK).reshape(got.shape)
    return not same_bits(got, want)


def run_table(table: list[Case], world: int, setting: str) -> tuple[list[str], int]:
    os.environ.pop("RINGRT_ALGO", None)
    os.environ.pop("RINGRT_SEGMENT_BYTES", None)
    os.environ.update(SETTINGS[setting])
    failures = [f"{setting}/{case.name}" for case in table
                if wrong(case, world, run_case(case, RANK, world))]
    return failures, len(table)


def point_to_point_and_objects(world: int) -> tuple[list[str], list]:
    """A ring of large sends (crossing hosts), object collectives, and a cross-host subgroup.
    Returns the failures and every rank's hostname."""
    failures = []
    right, left = (RANK + 1) % world, (RANK - 1) % world
    sent = np.arange(300_000, dtype=np.float32) + RANK
    got = np.empty_like(sent)
    work = dist.isend(sent, right, tag=5)
    dist.recv(got, src=left, tag=5)
    work.wait()
    if not np.array_equal(got, np.arange(300_000, dtype=np.float32) + left):
        failures.append("p2p ring")
    hosts = [None] * world
    dist.all_gather_object(hosts, socket.gethostname())
    if hosts[RANK] != socket.gethostname():
        failures.append("all_gather_object")
    odd = dist.new_group(list(range(1, world, 2)))          # one rank per host
    x = np.full(1000, float(RANK), np.float64)
    dist.all_reduce(x, group=odd)
    if RANK % 2 and not (x == sum(range(1, world, 2))).all():
        failures.append("subgroup all_reduce")
    dist.barrier()
    return failures, hosts


def check(args) -> None:
    dist.init_process_group(timeout=args.op_timeout)
    world = dist.get_world_size()
    start = time.monotonic()
    failures, ran = [], 0
    for setting in SETTINGS:
        dtypes = None if setting == "default" else QUICK_DTYPES
        table = [c for c in cases(world, big=True) if dtypes is None or c.dtype in dtypes]
        bad, count = run_table(table, world, setting)
        failures += bad
        ran += count
    extra, hosts = point_to_point_and_objects(world)
    write(f"rank{RANK}.json", {"failures": failures + extra, "cases": ran, "routes": routes(),
                               "hostname": socket.gethostname(), "hosts": hosts,
                               "seconds": time.monotonic() - start})
    dist.destroy_process_group()


def hierarchical(args) -> None:
    from tests.dist.hier_workers import HIERARCHICAL, _subgroup_cases, own_subgroup_failures

    if args.layout:
        sizes = [int(n) for n in args.layout.split(",")]
        hosts = [h for h, n in enumerate(sizes) for _ in range(n)]
        os.environ["RINGRT_HOST_ID"] = f"labhost{hosts[RANK]}"
    dist.init_process_group(timeout=args.op_timeout)
    world = dist.get_world_size()
    table = [c for c in cases(world, big=True) if c.dtype in QUICK_DTYPES]
    failures = []
    for setting, algo in (("two_level", HIERARCHICAL), ("flat", SETTINGS["bandwidth"])):
        os.environ.pop("RINGRT_SEGMENT_BYTES", None)
        os.environ.update(algo if isinstance(algo, dict) else {"RINGRT_ALGO": algo})
        failures += [f"{setting}/{c.name}" for c in table
                     if wrong(c, world, run_case(c, RANK, world))]
    os.environ.pop("RINGRT_ALGO")
    subgroup = [0, 1, 2, world - 1]                       # spans hosts, two ranks on the first
    group = dist.new_group(subgroup)
    if RANK in subgroup:
        failures += own_subgroup_failures(RANK, subgroup, _subgroup_cases(RANK, subgroup, group))
    dist.barrier()                                        # two levels by the model's choice
    from ringrt.distributed import _world

    write(f"rank{RANK}.json", {"failures": failures, "cases": 2 * len(table),
                               "algorithms": dist.stats()["algorithms"],
                               "host_arena": _world.comm.host_arena is not None,
                               "routes": routes()})
    dist.destroy_process_group()


def workload(args) -> None:
    """Small collectives of every kind plus ``args.mib`` x 1 MiB all_reduce, timed."""
    dist.init_process_group(timeout=args.op_timeout)
    world = dist.get_world_size()
    table = [c for c in cases(world, big=False) if c.dtype == "float32" and c.size in (1, 1023)]
    dist.barrier()
    start = time.monotonic()
    failures = [case.name for case in table if wrong(case, world, run_case(case, RANK, world))]
    big = np.full(1 << 18, RANK + 1, np.float32)            # 1 MiB
    for _ in range(args.mib):
        y = big.copy()
        dist.all_reduce(y)
        if not (y == world * (world + 1) // 2).all():
            failures.append("all_reduce 1 MiB")
    elapsed = np.array([time.monotonic() - start])
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    write(f"rank{RANK}.json", {"failures": failures, "cases": len(table) + args.mib,
                               "routes": routes(), "seconds": float(elapsed[0])})
    dist.destroy_process_group()


def attacked(args) -> None:
    """tests/security's workload while a tokenless attacker on a fourth host attacks."""
    from tests.security.workers import under_attack

    write(f"rank{RANK}.json", under_attack(RANK, int(os.environ["WORLD_SIZE"]), str(OUT)))


def loop(args) -> None:
    """all_reduce until a peer is lost; record the error, wait for this host's other ranks to
    record theirs (else ringrun stops them the moment this rank fails), then re-raise."""
    dist.init_process_group(timeout=args.op_timeout)
    x = np.ones(args.elements, np.float32)
    iterations = 0
    try:
        end = time.monotonic() + args.op_timeout
        while time.monotonic() < end:
            dist.all_reduce(x)
            x[:] = 1.0
            iterations += 1
            if iterations == 1:
                write(f"ready{RANK}", "1")
        raise SystemExit(f"rank {RANK}: no error within {args.op_timeout} s")
    except errors.DistError as exc:
        write(f"rank{RANK}.json", {"error": type(exc).__name__, "ranks": getattr(exc, "ranks", []),
                                   "message": str(exc), "at": time.monotonic(),
                                   "iterations": iterations})
        wait_for_local_ranks(deadline=time.monotonic() + 10)
        raise


def wait_for_local_ranks(deadline: float) -> None:
    local = int(os.environ["LOCAL_WORLD_SIZE"])
    first = int(os.environ["NODE_RANK"]) * local
    paths = [OUT / f"rank{r}.json" for r in range(first, first + local)]
    while time.monotonic() < deadline and not all(p.exists() for p in paths):
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["check", "workload", "loop", "attacked", "hierarchical"])
    parser.add_argument("--layout", default="", help="hierarchical: ranks per claimed host")
    parser.add_argument("--op-timeout", type=float, default=30.0)
    parser.add_argument("--mib", type=int, default=20, help="workload: 1 MiB all_reduces")
    parser.add_argument("--elements", type=int, default=1 << 16, help="loop: float32 elements")
    args = parser.parse_args()
    write(f"pid{RANK}", str(os.getpid()))
    {"check": check, "workload": workload, "loop": loop, "attacked": attacked,
     "hierarchical": hierarchical}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
