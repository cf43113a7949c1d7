"""Rank-side script of test_groups.py: subgroups of a job on 2 lab hosts x 2 ranks, each
running every collective through the NumPy API; started by ``ringrun`` on each host.

Groups (global ranks; ranks 0, 1 on the first host, 2, 3 on the second):

- ``host0`` [0, 1] and ``host1`` [2, 3]: inside one host (shared memory, run at once);
- ``span`` [0, 1, 2, 3]: two members on each host (two levels, shared memory inside a host);
- ``cross`` [1, 2]: one member on each host (sockets only).

Each group runs its ops under the algorithm choice (``default``) and with the two-level ops
forced (``two_level``), at two sizes. A rank writes what it got to ``rank{R}.npz`` (the test
compares it with NumPy on the regenerated inputs) and its ``ringrt.stats()`` deltas around
each group's creation and ops to ``rank{R}.json``; its pid to ``pid{R}``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

import ringrt as dist

GROUPS = {"host0": [0, 1], "host1": [2, 3], "span": [0, 1, 2, 3], "cross": [1, 2]}
STAGES = (("host0", "host1"), ("span",), ("cross",))
SIZES = (5, 70_001)              # float32: 20 B and 280 KB (two levels from 64 KiB)
SETTINGS = {
    "default": None,
    "two_level": "all_reduce=hierarchical,broadcast=hierarchical,all_gather=hierarchical,"
                 "barrier=hierarchical",
}
OPS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all_uneven",
       "barrier")


def block(label: str, src: int, dst: int, count: int) -> np.ndarray:
    """Group rank ``src``'s input meant for ``dst`` (small integers as float32: every sum is
    exact in any order)."""
    salt = sum(map(ord, label)) % 13
    return ((np.arange(count) * 7 + src * 31 + dst * 5 + salt) % 23).astype(np.float32)


def uneven_count(src: int, dst: int, size: int) -> int:
    """Elements ``src`` sends ``dst`` in the uneven all_to_all (zeros among them)."""
    return (0, 3, size // 2, size, size // 3 + 1)[(src * 3 + dst * 2) % 5]


def root_of(members: list[int]) -> int:
    """The broadcast's root, as a group rank: the last member (on the second host, if any)."""
    return len(members) - 1


def run_ops(label: str, group, members: list[int], size: int, key: str, out: dict) -> None:
    """Every op of OPS on ``group`` with ``size``-element inputs; results into ``out``."""
    me, n = members.index(dist.get_rank()), len(members)
    x = block(label, me, 0, size)
    dist.all_reduce(x, group=group)
    out[f"{key}/all_reduce"] = x
    y = np.full(size, -1, np.float32)
    dist.reduce_scatter(y, [block(label, me, j, size) for j in range(n)], group=group)
    out[f"{key}/reduce_scatter"] = y
    gathered = [np.full(size, -1, np.float32) for _ in range(n)]
    dist.all_gather(gathered, block(label, me, me, size), group=group)
    out[f"{key}/all_gather"] = np.stack(gathered)
    root = root_of(members)
    z = block(label, me, me, size) if me == root else np.zeros(size, np.float32)
    dist.broadcast(z, src=members[root], group=group)
    out[f"{key}/broadcast"] = z
    received = [np.full(uneven_count(q, me, size), -1, np.float32) for q in range(n)]
    dist.all_to_all(received, [block(label, me, j, uneven_count(me, j, size))
                               for j in range(n)], group=group)
    out[f"{key}/all_to_all_uneven"] = np.concatenate(received)
    out[f"{key}/barrier"] = np.array([barrier_entered(key, group, n)])


def barrier_entered(key: str, group, n: int) -> int:
    """How many members had entered the barrier when this rank left it (must be all)."""
    store = dist.get_store()
    entered = f"netlab-groups/{key}/entered"
    store.add(entered, 1)
    dist.barrier(group=group)
    return store.add(entered, 0)


def stats_now() -> dict:
    stats = dist.stats()
    return {"algorithms": stats["algorithms"], "shm_groups": stats["shm_groups"]}


def delta(before: dict, after: dict) -> dict:
    """What changed between two ``stats_now`` snapshots."""
    algorithms = {name: count - before["algorithms"].get(name, 0)
                  for name, count in after["algorithms"].items()
                  if count != before["algorithms"].get(name, 0)}
    shm = {k: after["shm_groups"][k] - before["shm_groups"][k] for k in after["shm_groups"]}
    return {"algorithms": algorithms, "shm_groups": shm}


def main() -> None:
    out_dir = os.environ["NETLAB_TEST_OUT"]
    rank = int(os.environ["RANK"])
    with open(os.path.join(out_dir, f"pid{rank}"), "w") as f:
        f.write(str(os.getpid()))
    dist.init_process_group(timeout=float(os.environ.get("GROUPS_OP_TIMEOUT", "20")))
    record = {"created": {}, "ran": {}}
    groups = {}
    for label, members in GROUPS.items():         # every rank, in the same order
        before = stats_now()
        groups[label] = dist.new_group(members)
        record["created"][label] = delta(before, stats_now())
    arrays = {}
    for stage in STAGES:
        before = stats_now()
        for label in stage:
            if rank in GROUPS[label]:
                for setting, algo in SETTINGS.items():
                    os.environ.pop("RINGRT_ALGO", None)
                    if algo:
                        os.environ["RINGRT_ALGO"] = algo
                    for size in SIZES:
                        run_ops(label, groups[label], GROUPS[label], size,
                                f"{label}/{setting}/{size}", arrays)
                os.environ.pop("RINGRT_ALGO", None)
        record["ran"]["+".join(stage)] = delta(before, stats_now())
        dist.barrier()
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **arrays)
    with open(os.path.join(out_dir, f".rank{rank}.json"), "w") as f:
        json.dump(record, f)
    os.replace(os.path.join(out_dir, f".rank{rank}.json"),
               os.path.join(out_dir, f"rank{rank}.json"))
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
