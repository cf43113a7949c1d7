"""Rank-side functions for the rest of the torch API on "ringrt": async ops and futures,
point-to-point, object collectives, coalescing, subgroups (run by tests/world.py)."""

from __future__ import annotations

import torch
import torch.distributed as dist

import ringrt.torch  # noqa: F401 - registers the backend


def async_and_futures(rank: int, world: int) -> dict:
    """Async ops in flight complete in call order; future callbacks may start ops."""
    out = {}
    tensors = [torch.full((1000 * (i + 1),), float(rank + i)) for i in range(5)]
    works = [dist.all_reduce(t, async_op=True) for t in tensors]
    big = torch.full((300_000,), float(rank))
    dist.all_reduce(big)                                  # blocking, queued behind them
    out["done_before_wait"] = all(w.is_completed() for w in works)
    for w in works:
        w.wait()
    out["async_sums"] = torch.cat(tensors).numpy()
    out["big"] = big[:3].numpy()
    out["future_value_is_tensor"] = isinstance(works[0].get_future().value()[0], torch.Tensor)

    seen = torch.zeros(4)

    def chained(fut):
        # runs on ringrt's executor thread: start a blocking op and an async one from here
        inner = torch.ones(4)
        dist.all_reduce(inner)
        follow = dist.all_reduce(torch.ones(2), async_op=True)
        follow.wait()
        seen.copy_(inner + fut.value()[0])
        return seen

    # Ops are matched by call order, so ops started from a callback must be ordered the same
    # way on every rank: both ops below are called before the callback can start its own
    # (it runs at once if the first is already done). On ringrt's thread, the callback's
    # blocking op finds the second queued and runs it first.
    first = dist.all_reduce(torch.ones(4), async_op=True)
    queued = dist.all_reduce(torch.ones(3), async_op=True)
    fut = first.get_future().then(chained)
    out["chained"] = fut.wait().numpy()
    queued.wait()
    barrier_work = dist.barrier(async_op=True)
    out["barrier_waited"] = barrier_work.wait()
    return out


def point_to_point(rank: int, world: int) -> dict:
    """Ring send/recv with tags, any-source receives, isend/irecv, batch_isend_irecv."""
    out = {}
    right, left = (rank + 1) % world, (rank - 1) % world
    got = torch.empty(3, dtype=torch.int32)
    if rank % 2 == 0:
        dist.send(torch.full((3,), rank, dtype=torch.int32), right, tag=5)
        sender = dist.recv(got, left, tag=5)
    else:
        sender = dist.recv(got, left, tag=5)
        dist.send(torch.full((3,), rank, dtype=torch.int32), right, tag=5)
    out["ring"], out["ring_sender"] = got.numpy(), sender
    big = torch.arange(300_000, dtype=torch.float32) + rank
    into = torch.empty_like(big)
    send_work = dist.isend(big, right, tag=9)
    recv_work = dist.irecv(into, left, tag=9)
    send_work.wait()
    recv_work.wait()
    out["big"] = into[:3].numpy()
    if rank == 0:
        senders = sorted(dist.recv(torch.empty(1), tag=3) for _ in range(world - 1))
        out["any_source"] = senders
    else:
        dist.send(torch.ones(1), 0, tag=3)
    bf16 = torch.full((5,), rank + 0.5, dtype=torch.bfloat16)
    bf16_in = torch.empty(5, dtype=torch.bfloat16)
    ops = [dist.P2POp(dist.isend, bf16, right), dist.P2POp(dist.irecv, bf16_in, left)]
    for work in dist.batch_isend_irecv(ops):
        work.wait()
    out["batch"] = bf16_in.float().numpy()
    objects = [None, None]
    if rank == 0:
        dist.send_object_list([{"to": "one"}, (1, 2)], dst=1)
    elif rank == 1:
        dist.recv_object_list(objects, src=0)
    out["objects"] = repr(objects)
    return out


def object_collectives(rank: int, world: int) -> dict:
    """torch's *_object collectives (torch pickles above the backend; ringrt moves bytes)."""
    items = [{"from": rank}, [rank] * 3] if rank == world - 1 else [None, None]
    dist.broadcast_object_list(items, src=world - 1)
    gathered = [None] * world
    dist.all_gather_object(gathered, {"rank": rank, "text": "x" * rank})
    collected = [None] * world if rank == 1 else None
    dist.gather_object(rank * 10, collected, dst=1)
    scattered = [None]
    dist.scatter_object_list(scattered, [f"to {r}" for r in range(world)] if rank == 0
                             else None, src=0)
    return {"broadcast": repr(items), "gathered": repr(gathered), "collected": repr(collected),
            "scattered": scattered[0]}


def coalescing(rank: int, world: int) -> dict:
    """torch's coalescing paths: _coalescing_manager (with and without a device),
    all_reduce_coalesced, all_gather_coalesced."""
    from torch.distributed.distributed_c10d import _coalescing_manager

    out = {}
    tensors = [torch.full((n,), float(rank + 1)) for n in (3, 100, 70_000)]
    with _coalescing_manager(async_ops=True) as manager:
        for t in tensors:
            dist.all_reduce(t)
    manager.wait()
    out["manager_all_reduce"] = torch.cat([t[:2] for t in tensors]).numpy()
    gathered = torch.empty(world * 4)
    scattered = torch.empty(2)
    with _coalescing_manager(device=torch.device("cpu")):
        dist.all_gather_into_tensor(gathered, torch.full((4,), float(rank)))
    with _coalescing_manager(device=torch.device("cpu"), async_ops=True) as manager:
        dist.reduce_scatter_tensor(scattered, torch.arange(world * 2, dtype=torch.float32))
        dist.broadcast(tensors[0], src=0)           # no fast path: runs at once, same Work
    manager.wait()
    out["manager_all_gather"] = gathered.numpy()
    out["manager_reduce_scatter"] = scattered.numpy()
    pieces = [torch.full((5,), float(rank)), torch.full((2, 2), 1.0)]
    dist.all_reduce_coalesced(pieces)
    out["all_reduce_coalesced"] = torch.cat([p.reshape(-1) for p in pieces]).numpy()
    # torch's layout: outputs[r][i] receives rank r's inputs[i]
    outputs = [[torch.empty(2), torch.empty(3)] for _ in range(world)]
    dist.all_gather_coalesced(outputs, [torch.full((2,), float(rank)),
                                        torch.full((3,), 10.0 + rank)])
    out["all_gather_coalesced"] = torch.stack([torch.cat(o) for o in outputs]).numpy()
    return out


def subgroups(rank: int, world: int) -> dict:
    """ringrt subgroups (torch calls the backend on members only) next to gloo ones over the
    same ranks, interleaved with world ops; a member-local group; a non-member's no-op."""
    out = {}
    # first: torch names such a group after its ranks *and* how many groups this rank has,
    # so its members must have made equally many before
    local = dist.new_group([2, 3], use_local_synchronization=True) if rank in (2, 3) else None
    odd = dist.new_group([1, 3], backend="ringrt")
    low = dist.new_group([0, 1, 2], backend="ringrt")
    odd_gloo = dist.new_group([1, 3], backend="gloo")
    for name, group, gloo in (("odd", odd, odd_gloo), ("low", low, None)):
        members = dist.get_process_group_ranks(group) if group != \
            dist.GroupMember.NON_GROUP_MEMBER else []
        world_sum = torch.ones(2)
        if rank not in members:
            out[name + "_none"] = dist.all_reduce(torch.ones(1), group=group) is None
            dist.all_reduce(world_sum)       # every rank: a world op between subgroup ops
            continue
        x = torch.full((70_000,), float(rank + 1))
        dist.all_reduce(x, group=group)
        gathered = [torch.empty(1) for _ in members]
        dist.all_gather(gathered, torch.tensor([float(rank)]), group=group)
        root = members[-1]
        b = torch.full((3,), float(rank))
        dist.broadcast(b, src=root, group=group)
        out[name] = torch.cat([x[:1], torch.cat(gathered), b[:1]]).numpy()
        out[name + "_rank"] = [dist.get_rank(group), dist.get_world_size(group)]
        if gloo is not None:
            y = torch.full((70_000,), float(rank + 1))
            dist.all_reduce(y, group=gloo)
            out[name + "_gloo_equal"] = bool(torch.equal(x, y))
        dist.all_reduce(world_sum)
        out[name + "_world"] = world_sum.numpy()
    if local is not None:
        z = torch.full((2,), float(rank))
        dist.all_reduce(z, group=local)
        out["local"] = z.numpy()
    return out


def functional(rank: int, world: int) -> dict:
    """torch's functional collectives and DTensor, which reach the backend from C++."""
    import torch.distributed._functional_collectives as funcol
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    total = funcol.all_reduce(torch.full((4,), float(rank + 1)), "sum", dist.group.WORLD)
    gathered = funcol.all_gather_tensor(torch.full((2,), float(rank)), 0, dist.group.WORLD)
    mesh = init_device_mesh("cpu", (world,))
    sharded = distribute_tensor(torch.arange(4.0 * world), mesh, [Shard(0)])
    return {"all_reduce": total.numpy(), "all_gather": gathered.numpy(),
            "dtensor": sharded.full_tensor().numpy(), "local": sharded.to_local().numpy()}


def api_tour(rank: int, world: int) -> dict:
    """One world running every function above in turn."""
    dist.init_process_group("ringrt")
    out = {}
    for part in (async_and_futures, point_to_point, object_collectives, coalescing, subgroups,
                 functional):
        for key, value in part(rank, world).items():
            out[f"{part.__name__}/{key}"] = value
    dist.barrier()
    dist.destroy_process_group()
    return out


def point_to_point_more(rank: int, world: int) -> dict:
    """Point-to-point beyond the tour (run on each path: shared memory and sockets): the
    tour's part, a receive's future, polling, batches in both directions, any-source."""
    dist.init_process_group("ringrt")
    out = {f"tour/{k}": v for k, v in point_to_point(rank, world).items()}
    right, left = (rank + 1) % world, (rank - 1) % world
    into = torch.empty(4)
    future = dist.irecv(into, left, tag=1).get_future()    # completes with nobody waiting
    dist.send(torch.full((4,), rank + 0.5), right, tag=1)
    out["future"] = future.wait()[0].numpy()
    polled = torch.empty(2)
    work = dist.irecv(polled, left, tag=2)
    dist.isend(torch.full((2,), float(rank)), right, tag=2)
    while not work.is_completed():
        pass
    out["polled"] = polled.numpy()
    sends = [torch.full((70_000,), float(rank * 10 + i)) for i in range(3)]
    from_left = [torch.empty(70_000) for _ in range(3)]
    from_right = [torch.empty(70_000) for _ in range(3)]
    ops = [dist.P2POp(dist.isend, t, right) for t in sends] + \
          [dist.P2POp(dist.isend, t, left) for t in sends] + \
          [dist.P2POp(dist.irecv, t, left) for t in from_left] + \
          [dist.P2POp(dist.irecv, t, right) for t in from_right]
    for work in dist.batch_isend_irecv(ops):
        work.wait()
    out["batch_left"] = torch.stack([t[:2] for t in from_left]).numpy()
    out["batch_right"] = torch.stack([t[:2] for t in from_right]).numpy()
    if rank == 0:
        got = torch.empty(1)
        works = [dist.irecv(got.clone(), tag=4) for _ in range(world - 1)]
        out["any_source"] = sorted(w._source_rank() for w in works)
    else:
        dist.send(torch.ones(1), 0, tag=4)
    out["path"] = dist.group.WORLD.ringrt_group.comm.stats()["p2p"]["path"]
    dist.barrier()
    dist.destroy_process_group()
    return out
