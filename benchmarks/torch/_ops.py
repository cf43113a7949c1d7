"""The torch collectives the torch benchmarks time, prepared on one process group.

``prepare(op, count, group)`` allocates the op's tensors once and returns a :class:`Prepared`
whose ``run()`` is the timed call (on zeros: repeated sums neither overflow nor go
subnormal) and whose ``check()`` makes one more call on known inputs and counts the wrong
elements on this rank. ``count`` is the element count of the whole array, as in
nccl-tests: the all_reduce / broadcast / reduce / send buffer, the all_gather output, the
reduce_scatter / all_to_all input; float32 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

OPS = ("all_reduce", "broadcast", "reduce", "all_gather_into_tensor", "reduce_scatter_tensor",
       "all_gather", "gather", "scatter", "all_to_all_single", "send_recv", "barrier")
ROOT = 0
# torch 2.13 renamed the *_tensor collectives *_single (the old names warn)
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or \
    dist.reduce_scatter_tensor


@dataclass
class Prepared:
    run: object          # () -> None: one call (the timed loop calls this)
    check: object        # () -> int: one call on known inputs; wrong elements on this rank


def pattern(count: int, rank: int) -> torch.Tensor:
    """Rank ``rank``'s known input: small integers (exact float sums), different per rank."""
    return ((torch.arange(count) % 13) + 1 + rank).float()


def prepare(op: str, count: int, group) -> Prepared:
    """The op's buffers on ``group`` (a torch group of every rank) and its two calls."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    chunk = max(1, count // world)
    return _PREPARE[op](count, chunk, rank, world, group)


def _wrong(got: torch.Tensor, want: torch.Tensor) -> int:
    return int((got != want).sum())


def _all_reduce(count, chunk, rank, world, group):
    buf = torch.zeros(count)

    def check():
        buf.copy_(pattern(count, rank))
        dist.all_reduce(buf, group=group)
        return _wrong(buf, world * pattern(count, 0) + world * (world - 1) // 2)
    return Prepared(lambda: dist.all_reduce(buf, group=group), check)


def _broadcast(count, chunk, rank, world, group):
    buf = torch.zeros(count)

    def check():
        buf.copy_(pattern(count, rank) if rank == ROOT else torch.full((count,), -1.0))
        dist.broadcast(buf, src=ROOT, group=group)
        return _wrong(buf, pattern(count, ROOT))
    return Prepared(lambda: dist.broadcast(buf, src=ROOT, group=group), check)


def _reduce(count, chunk, rank, world, group):
    buf = torch.zeros(count)

    def check():
        buf.copy_(pattern(count, rank))
        dist.reduce(buf, dst=ROOT, group=group)
        want = world * pattern(count, 0) + world * (world - 1) // 2
        return _wrong(buf, want) if rank == ROOT else 0
    return Prepared(lambda: dist.reduce(buf, dst=ROOT, group=group), check)


def _gathered(chunk, world):
    return torch.cat([pattern(chunk, r) for r in range(world)])


def _all_gather_into_tensor(count, chunk, rank, world, group):
    out, inp = torch.zeros(chunk * world), torch.zeros(chunk)

    def check():
        inp.copy_(pattern(chunk, rank))
        _all_gather_single(out, inp, group=group)
        return _wrong(out, _gathered(chunk, world))
    return Prepared(lambda: _all_gather_single(out, inp, group=group), check)


def _all_gather(count, chunk, rank, world, group):
    outs, inp = [torch.zeros(chunk) for _ in range(world)], torch.zeros(chunk)

    def check():
        inp.copy_(pattern(chunk, rank))
        dist.all_gather(outs, inp, group=group)
        return _wrong(torch.cat(outs), _gathered(chunk, world))
    return Prepared(lambda: dist.all_gather(outs, inp, group=group), check)


def _reduce_scatter_tensor(count, chunk, rank, world, group):
    out, inp = torch.zeros(chunk), torch.zeros(chunk * world)

    def check():
        inp.copy_(pattern(chunk * world, rank))
        _reduce_scatter_single(out, inp, group=group)
        block = pattern(chunk * world, 0)[rank * chunk:(rank + 1) * chunk]
        return _wrong(out, world * block + world * (world - 1) // 2)
    return Prepared(lambda: _reduce_scatter_single(out, inp, group=group), check)


def _gather(count, chunk, rank, world, group):
    inp = torch.zeros(chunk)
    outs = [torch.zeros(chunk) for _ in range(world)] if rank == ROOT else None

    def check():
        inp.copy_(pattern(chunk, rank))
        dist.gather(inp, outs, dst=ROOT, group=group)
        return _wrong(torch.cat(outs), _gathered(chunk, world)) if rank == ROOT else 0
    return Prepared(lambda: dist.gather(inp, outs, dst=ROOT, group=group), check)


def _scatter(count, chunk, rank, world, group):
    out = torch.zeros(chunk)
    ins = [torch.zeros(chunk) for _ in range(world)] if rank == ROOT else None

    def check():
        if rank == ROOT:
            for r, t in enumerate(ins):
                t.copy_(pattern(chunk, r))
        dist.scatter(out, ins, src=ROOT, group=group)
        return _wrong(out, pattern(chunk, rank))
    return Prepared(lambda: dist.scatter(out, ins, src=ROOT, group=group), check)


def _all_to_all_single(count, chunk, rank, world, group):
    out, inp = torch.zeros(chunk * world), torch.zeros(chunk * world)

    def check():
        inp.copy_(pattern(chunk * world, rank))
        dist.all_to_all_single(out, inp, group=group)
        want = torch.cat([pattern(chunk * world, r)[rank * chunk:(rank + 1) * chunk]
                          for r in range(world)])
        return _wrong(out, want)
    return Prepared(lambda: dist.all_to_all_single(out, inp, group=group), check)


def _send_recv(count, chunk, rank, world, group):
    """Every rank sends ``count`` elements to the next and receives from the previous."""
    out, inp = torch.zeros(count), torch.zeros(count)
    right = dist.get_global_rank(group, (rank + 1) % world)
    left = dist.get_global_rank(group, (rank - 1) % world)

    def run():
        works = dist.batch_isend_irecv([dist.P2POp(dist.isend, out, right, group),
                                        dist.P2POp(dist.irecv, inp, left, group)])
        for work in works:
            work.wait()

    def check():
        out.copy_(pattern(count, rank))
        run()
        return _wrong(inp, pattern(count, (rank - 1) % world))
    return Prepared(run, check)


def _barrier(count, chunk, rank, world, group):
    def check():
        dist.barrier(group=group)
        return 0
    return Prepared(lambda: dist.barrier(group=group), check)


_PREPARE = {
    "all_reduce": _all_reduce, "broadcast": _broadcast, "reduce": _reduce,
    "all_gather_into_tensor": _all_gather_into_tensor, "all_gather": _all_gather,
    "reduce_scatter_tensor": _reduce_scatter_tensor, "gather": _gather, "scatter": _scatter,
    "all_to_all_single": _all_to_all_single, "send_recv": _send_recv, "barrier": _barrier,
}
