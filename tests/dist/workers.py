"""Rank-side functions for tests/dist (run by tests/world.py in fresh processes)."""

from __future__ import annotations

import time

import numpy as np

import ringrt as dist
from tests.dist.cases import block_input, cases, make_input


def run_case(case, rank: int, world: int, group=None, members=None) -> np.ndarray:
    """Run one case on this rank and return what the parent compares (see
    cases.expected_for_rank). In a subgroup, ``rank`` and ``world`` are the group's and
    ``members`` its global ranks (roots are passed as global ranks, as in torch)."""
    op = dist.ReduceOp[case.redop]
    root = case.root if members is None else members[case.root]
    x = make_input(case, rank)
    if case.op == "all_reduce":
        dist.all_reduce(x, op=op, group=group)
        return x
    if case.op == "reduce":
        dist.reduce(x, dst=root, op=op, group=group)
        return x
    if case.op == "broadcast":
        if rank != case.root:
            x = np.zeros_like(x)
        dist.broadcast(x, src=root, group=group)
        return x
    if case.op == "all_gather":
        out = [np.full(case.size, 9, case.dtype) for _ in range(world)]
        dist.all_gather(out, x, group=group)
        return np.stack(out) if world else out
    if case.op == "all_gather_into_tensor":
        out = np.full((world, case.size), 9, case.dtype)
        dist.all_gather_into_tensor(out, x, group=group)
        return out
    if case.op == "gather":
        out = [np.full(case.size, 9, case.dtype) for _ in range(world)] \
            if rank == case.root else None
        dist.gather(x, out, dst=root, group=group)
        return np.stack(out) if rank == case.root else np.zeros((0,), case.dtype)
    blocks = block_input(case, rank, world)
    if case.op == "scatter":
        out = np.full(case.size, 9, case.dtype)
        dist.scatter(out, list(blocks) if rank == case.root else None, src=root,
                     group=group)
        return out
    if case.op == "all_to_all":
        out = [np.full(case.size, 9, case.dtype) for _ in range(world)]
        dist.all_to_all(out, [np.ascontiguousarray(b) for b in blocks], group=group)
        return np.stack(out)
    if case.op == "all_to_all_single":
        out = np.full_like(blocks, 9)
        dist.all_to_all_single(out, blocks, group=group)
        return out
    if case.op == "reduce_scatter":
        out = np.full(case.size, 9, case.dtype)
        dist.reduce_scatter(out, [np.ascontiguousarray(b) for b in blocks], op=op, group=group)
        return out
    if case.op == "reduce_scatter_tensor":
        out = np.full(case.size, 9, case.dtype)
        dist.reduce_scatter_tensor(out, blocks, op=op, group=group)
        return out
    raise AssertionError(case.op)


def collective_matrix(rank: int, world: int, big: bool = True):
    """Every case of cases.cases(world), in one process group."""
    dist.init_process_group(timeout=60)
    results = {}
    for case in cases(world, big):
        results[case.name] = run_case(case, rank, world)
    dist.barrier()
    dist.destroy_process_group()
    return results


def async_and_order(rank: int, world: int):
    """Several async ops in flight, then sync ops: all complete in call order."""
    dist.init_process_group(timeout=30)
    arrays = [np.full(1000 * (i + 1), rank + i, np.float64) for i in range(6)]
    works = [dist.all_reduce(a, async_op=True) for a in arrays[:5]]
    bcast = np.full(10, rank, np.int32)
    work_b = dist.broadcast(bcast, src=0, async_op=True)
    dist.all_reduce(arrays[5])                       # sync, queued behind the async ops
    done_before_wait = [w.is_completed() for w in works]
    assert all(w.wait(timeout=30) for w in works)
    work_b.wait()
    assert all(w.exception() is None for w in works) and work_b.is_completed()
    big = np.arange(400_000, dtype=np.float32) * (rank + 1)
    work = dist.all_reduce(big, async_op=True)
    work.wait()
    dist.destroy_process_group()
    return {"arrays": np.concatenate(arrays), "bcast": bcast, "big": big,
            "done_before_wait": done_before_wait}


def subgroups(rank: int, world: int):
    """Subgroup [1, 3] of 4 interleaved with world ops; non-members get no-ops."""
    dist.init_process_group(timeout=30)
    group = dist.new_group([1, 3])
    evens = dist.new_group([0, 2])
    out = {"group_rank": dist.get_rank(group), "group_size": dist.get_world_size(group)}
    x = np.full(5, float(rank))
    result = dist.all_reduce(x, group=group)        # no-op (None) on ranks 0 and 2
    w = np.full(3, float(rank))
    dist.all_reduce(w)
    y = np.full(70_000, float(rank), np.float32)    # ring path inside the subgroup
    dist.all_reduce(y, group=group)
    e = np.full(2, rank, np.int64)
    dist.broadcast(e, src=2, group=evens)            # src is a global rank, as in torch
    objs = [None, None]
    dist.all_gather_object(objs, rank, group=group)
    dist.barrier()
    dist.destroy_process_group()
    out.update(x=x, w=w, y=y, e=e, objs=objs, returned_none=result is None)
    return out


def member_groups(rank: int, world: int):
    """Groups formed by their members alone (ProcessGroup.new_member_group), as torch forms
    them: [1, 3] and [0, 1, 2], each agreeing on its id through its own store prefix; the
    non-members never call. Rank 1, in both, forms them in the opposite order."""
    from ringrt.store import PrefixStore

    dist.init_process_group(timeout=30)
    world_group, store = dist.distributed.resolve(), dist.get_store()
    plan = {"odd": [1, 3], "low": [0, 1, 2]}
    order = ["low", "odd"] if rank == 1 else ["odd", "low"]
    groups = {name: world_group.new_member_group(plan[name], PrefixStore(f"g/{name}", store))
              for name in order if rank in plan[name]}
    out = {"ids_distinct": len({g.group_id for g in groups.values()}) == len(groups)}
    for name in order:
        if name in groups:
            x = np.full(70_000 if name == "odd" else 5, float(rank + 1), np.float32)
            dist.all_reduce(x, group=groups[name])
            out[name] = x[:5]
            out[name + "_id"] = np.array([groups[name].group_id])
    dist.barrier()
    dist.destroy_process_group()
    return out


def point_to_point(rank: int, world: int):
    """Ring of sends with tags, then any-source receives on rank 0, then isend/irecv."""
    dist.init_process_group(timeout=30)
    right, left = (rank + 1) % world, (rank - 1) % world
    small = np.full(3, rank, np.int32)
    big = np.arange(300_000, dtype=np.float32) + rank
    got_small, got_big = np.empty(3, np.int32), np.empty(300_000, np.float32)
    send_work = dist.isend(small, right, tag=7)
    small[:] = -1                                # isend took a snapshot
    dist.isend(big, right, tag=8)
    recv_work = dist.irecv(got_big, src=left, tag=8)
    sender = dist.recv(got_small, src=left, tag=7)
    recv_work.wait()
    send_work.wait()
    senders = []
    if rank == 0:
        buf = np.empty(1, np.int64)
        for _ in range(world - 1):
            senders.append(dist.recv(buf, tag=3))
    else:
        dist.send(np.array([rank], np.int64), 0, tag=3)
    dist.barrier()
    dist.destroy_process_group()
    return {"got_small": got_small, "got_big": got_big, "sender": sender,
            "irecv_sender": recv_work.result(), "any_source": sorted(senders)}


def objects(rank: int, world: int):
    """Object collectives carry msgpack values, tuples and NumPy arrays."""
    dist.init_process_group(timeout=30)
    value = {"rank": rank, "pair": (rank, "x"), "arr": np.arange(3) * rank, "f": np.float32(1.5)}
    gathered = [None] * world
    dist.all_gather_object(gathered, value)
    items = [{"from": 0}, (1, 2), None] if rank == 0 else [None, None, None]
    dist.broadcast_object_list(items, src=0)
    collected = [None] * world if rank == world - 1 else None
    dist.gather_object(rank * 10, collected, dst=world - 1)
    out = [None]
    dist.scatter_object_list(out, [f"to {r}" for r in range(world)] if rank == 0 else None, src=0)
    rejected = None
    try:
        dist.all_gather_object([None] * world, object())
    except TypeError as exc:
        rejected = str(exc)
    dist.destroy_process_group()
    ok = (all(g["rank"] == r and g["pair"] == (r, "x") and (g["arr"] == np.arange(3) * r).all()
              and isinstance(g["f"], np.float32) for r, g in enumerate(gathered)))
    return {"gathered_ok": ok, "items": repr(items), "collected": collected, "scattered": out[0],
            "rejected": rejected}


def last_message(rank: int, world: int):
    """Rank 1 sends, destroys the group and exits at once; rank 0 receives only after that."""
    dist.init_process_group(timeout=30)
    big = np.arange(2_000_000, dtype=np.float32)
    if rank == 1:
        dist.send(big, 0, tag=1)
        dist.send(np.array([42], np.int64), 0, tag=2)
        dist.destroy_process_group()
        return {}
    sentinel = dist.distributed._world.comm.sentinel
    deadline = time.monotonic() + 30
    while 1 not in sentinel.lost and time.monotonic() < deadline:   # rank 1 is gone for good
        time.sleep(0.05)
    got_big, got_small = np.empty_like(big), np.empty(1, np.int64)
    dist.recv(got_big, src=1, tag=1)
    dist.recv(got_small, src=1, tag=2)
    path = dist.stats()["p2p"]["path"]
    dist.destroy_process_group()
    return {"ok": bool((got_big == big).all()) and int(got_small[0]) == 42, "path": path}


def all_gather_in_place(rank: int, world: int):
    """all_gather_into_tensor whose input is this rank's own block of the output."""
    dist.init_process_group(timeout=30)
    results = {}
    for count in (1, 1000, 300_001):
        out = np.zeros(world * count, np.float32)
        block = out[rank * count:(rank + 1) * count]
        block[:] = np.arange(count, dtype=np.float32) + 1000 * rank
        dist.all_gather_into_tensor(out, block)
        results[f"n{count}"] = out
    dist.destroy_process_group()
    return results


def stats_counts(rank: int, world: int):
    """A known mix of ops, then ringrt.stats() (and an object that is no collective)."""
    dist.init_process_group(timeout=30)
    for _ in range(3):
        dist.all_reduce(np.ones(1000, np.float32))
    dist.broadcast(np.ones(10, np.int64), src=0)
    sub = dist.new_group([0, 1])
    if rank in (0, 1):
        dist.all_reduce(np.ones(4, np.float64), group=sub)
    if rank == 0:
        dist.send(np.ones(5, np.int32), 1)
    elif rank == 1:
        dist.recv(np.empty(5, np.int32), 0)
    try:
        dist.all_reduce(np.ones((4, 4))[:, ::2])       # rejected: local, counted nowhere
    except ValueError:
        pass
    stats = dist.stats()
    dist.destroy_process_group()
    return {"stats": stats}


def portable_shm(rank: int, world: int):
    """The collective case table, then which shared-memory path this rank took and how often
    it used it (run with RINGRT_SHM_OPEN=1 / RINGRT_NO_FUTEX=1: tests/unit/test_portable.py)."""
    from ringrt._comm import futex, shm_files

    dist.init_process_group(timeout=60)
    results = {case.name: run_case(case, rank, world) for case in cases(world, True)}
    stats = dist.stats()
    dist.barrier()
    dist.destroy_process_group()
    results["shm_open"] = shm_files.uses_shm_open()
    results["futex"] = futex.AVAILABLE
    results["shm_ops"] = sum(n for name, n in stats["algorithms"].items()
                             if name.endswith("/shm"))
    return results
