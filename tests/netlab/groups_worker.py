"""Rank-side script of test_groups.py: subgroups of a job on 2 lab hosts x 2 ranks, each
running every collective through the NumPy API (``python groups_worker.py``) or through
torch.distributed on the "ringrt" backend (``python groups_worker.py torch``, the same NumPy
arrays as tensors that share their memory); started by ``ringrun`` on each host.

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


class NumpyApi:
    """The collectives as run_ops calls them, through ringrt's NumPy API."""

    def __init__(self):
        dist.init_process_group()               # ringrun's --timeout
        self.store = dist.get_store()
        for name in ("new_group", "get_rank", "all_reduce", "reduce_scatter", "all_gather",
                     "broadcast", "all_to_all", "barrier", "destroy_process_group"):
            setattr(self, name, getattr(dist, name))


class TorchApi:
    """The same through torch.distributed on the "ringrt" backend: every array goes in as a
    tensor sharing its memory (``torch.from_numpy``), so results land in the arrays."""

    def __init__(self):
        import torch
        import torch.distributed as tdist

        import ringrt.torch  # noqa: F401 - registers the backend

        tdist.init_process_group("ringrt")
        self.t, self.d = torch.from_numpy, tdist
        self.store = tdist.distributed_c10d._get_default_store()
        self.get_rank, self.destroy_process_group = tdist.get_rank, tdist.destroy_process_group

    def new_group(self, members=None):
        return self.d.new_group(members, backend="ringrt")

    def all_reduce(self, array, group=None):
        self.d.all_reduce(self.t(array), group=group)

    def reduce_scatter(self, output, inputs, group=None):
        self.d.reduce_scatter(self.t(output), [self.t(a) for a in inputs], group=group)

    def all_gather(self, outputs, array, group=None):
        self.d.all_gather([self.t(a) for a in outputs], self.t(array), group=group)

    def broadcast(self, array, src, group=None):
        self.d.broadcast(self.t(array), src=src, group=group)

    def all_to_all(self, outputs, inputs, group=None):
        self.d.all_to_all([self.t(a) for a in outputs], [self.t(a) for a in inputs],
                          group=group)

    def barrier(self, group=None):
        self.d.barrier(group=group)


def run_ops(api, label: str, group, members: list[int], size: int, key: str,
            out: dict) -> None:
    """Every op of OPS on ``group`` with ``size``-element inputs; results into ``out``."""
    me, n = members.index(api.get_rank()), len(members)
    x = block(label, me, 0, size)
    api.all_reduce(x, group=group)
    out[f"{key}/all_reduce"] = x
    y = np.full(size, -1, np.float32)
    api.reduce_scatter(y, [block(label, me, j, size) for j in range(n)], group=group)
    out[f"{key}/reduce_scatter"] = y
    gathered = [np.full(size, -1, np.float32) for _ in range(n)]
    api.all_gather(gathered, block(label, me, me, size), group=group)
    out[f"{key}/all_gather"] = np.stack(gathered)
    root = root_of(members)
    z = block(label, me, me, size) if me == root else np.zeros(size, np.float32)
    api.broadcast(z, src=members[root], group=group)
    out[f"{key}/broadcast"] = z
    received = [np.full(uneven_count(q, me, size), -1, np.float32) for q in range(n)]
    api.all_to_all(received, [block(label, me, j, uneven_count(me, j, size))
                              for j in range(n)], group=group)
    out[f"{key}/all_to_all_uneven"] = np.concatenate(received)
    out[f"{key}/barrier"] = np.array([barrier_entered(api, key, group)])


def barrier_entered(api, key: str, group) -> int:
    """How many members had entered the barrier when this rank left it (must be all)."""
    entered = f"netlab-groups/{key}/entered"
    api.store.add(entered, 1)
    api.barrier(group=group)
    return api.store.add(entered, 0)


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
    api = TorchApi() if sys.argv[1:] == ["torch"] else NumpyApi()
    record = {"created": {}, "ran": {}}
    groups = {}
    for label, members in GROUPS.items():         # every rank, in the same order
        before = stats_now()
        groups[label] = api.new_group(members)
        record["created"][label] = delta(before, stats_now())
    arrays = {}
    for stage in STAGES:
        before = stats_now()
        for label in stage:
            if rank in GROUPS[label]:
                run_group(api, label, groups[label], arrays)
        record["ran"]["+".join(stage)] = delta(before, stats_now())
        api.barrier()
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **arrays)
    with open(os.path.join(out_dir, f".rank{rank}.json"), "w") as f:
        json.dump(record, f)
    os.replace(os.path.join(out_dir, f".rank{rank}.json"),
               os.path.join(out_dir, f"rank{rank}.json"))
    api.destroy_process_group()


def run_group(api, label: str, group, arrays: dict) -> None:
    """The group's ops under each of SETTINGS, at each of SIZES."""
    for setting, algo in SETTINGS.items():
        os.environ.pop("RINGRT_ALGO", None)
        if algo:
            os.environ["RINGRT_ALGO"] = algo
        for size in SIZES:
            run_ops(api, label, group, GROUPS[label], size, f"{label}/{setting}/{size}", arrays)
    os.environ.pop("RINGRT_ALGO", None)


if __name__ == "__main__":
    sys.exit(main())
