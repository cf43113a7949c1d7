"""Argument checks of the torch ops, made before the first byte is sent.

torch hands a backend lists of tensors (one per device in the old multi-device API) and
*group* ranks; these helpers check them and say, like the rest of ringrt, what was expected,
what came, on which rank, and what to do. A rejected call is purely local: it takes no
sequence number, so the corrected call matches the other ranks'.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ringrt._reduce_ops import ReduceOp
from ringrt.torch import _tensors

_REDUCE_OPS = {
    dist.ReduceOp.SUM: ReduceOp.SUM, dist.ReduceOp.AVG: ReduceOp.AVG,
    dist.ReduceOp.PRODUCT: ReduceOp.PRODUCT, dist.ReduceOp.MIN: ReduceOp.MIN,
    dist.ReduceOp.MAX: ReduceOp.MAX, dist.ReduceOp.BAND: ReduceOp.BAND,
    dist.ReduceOp.BOR: ReduceOp.BOR, dist.ReduceOp.BXOR: ReduceOp.BXOR,
}


def one_tensor(op: str, tensors, rank: int, name: str = "tensor") -> torch.Tensor:
    """The single tensor of a ``[tensor]`` argument, checked."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) != 1:
        count = len(tensors) if isinstance(tensors, (list, tuple)) else type(tensors).__name__
        raise ValueError(f"{op}: the ringrt backend takes exactly one {name} per call, got "
                         f"{count} on rank {rank}")
    return _tensors.check(op, tensors[0], rank, name)


def tensor_list(op: str, tensors, length: int, rank: int, name: str,
                like: torch.Tensor | None = None) -> list[torch.Tensor]:
    """A list of ``length`` checked tensors, each with ``like``'s dtype and element count."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) != length:
        count = len(tensors) if isinstance(tensors, (list, tuple)) else type(tensors).__name__
        raise ValueError(f"{op}: {name} must hold one tensor per rank of the group ({length}), "
                         f"got {count} on rank {rank}")
    checked = [_tensors.check(op, t, rank, f"{name}[{i}]") for i, t in enumerate(tensors)]
    if like is not None:
        for i, t in enumerate(checked):
            same_kind(op, t, like, rank, f"{name}[{i}]", like.numel())
    return checked


def tensor_lists(op: str, lists, length: int, inner: int, rank: int, name: str) -> list:
    """``length`` lists of ``inner`` tensors each (unchecked: the op checks each tensor)."""
    if not isinstance(lists, (list, tuple)) or len(lists) != length:
        count = len(lists) if isinstance(lists, (list, tuple)) else type(lists).__name__
        raise ValueError(f"{op}: {name} must hold one list per rank of the group ({length}), "
                         f"got {count} on rank {rank}")
    for r, tensors in enumerate(lists):
        if not isinstance(tensors, (list, tuple)) or len(tensors) != inner:
            count = len(tensors) if isinstance(tensors, (list, tuple)) else \
                type(tensors).__name__
            raise ValueError(f"{op}: {name}[{r}] must hold one tensor per input tensor "
                             f"({inner}), got {count} on rank {rank}")
    return list(lists)


def same_kind(op: str, tensor: torch.Tensor, like: torch.Tensor, rank: int, name: str,
              numel: int) -> None:
    """``tensor`` has ``like``'s dtype and ``numel`` elements."""
    if tensor.dtype != like.dtype or tensor.numel() != numel:
        raise ValueError(f"{op}: {name} is {tensor.dtype} with {tensor.numel()} elements on "
                         f"rank {rank}, expected {like.dtype} with {numel}")


def root(op: str, group_rank: int, size: int, rank: int, name: str) -> int:
    """A root given as a group rank, checked."""
    if not 0 <= group_rank < size:
        raise ValueError(f"{op}: {name}={group_rank} is not a rank of this group (size {size}) "
                         f"on rank {rank}")
    return group_rank


# the same by the enum's value: an int hashes in a fraction of a pybind enum's time
_REDUCE_OPS_BY_VALUE = {torch_op.value: ours for torch_op, ours in _REDUCE_OPS.items()}


def plain_reduce_op(torch_op) -> ReduceOp | None:
    """ringrt's ReduceOp for torch's, or None for PREMUL_SUM and anything unknown (which
    :func:`reduce_op` scales or rejects)."""
    return _REDUCE_OPS_BY_VALUE.get(torch_op.op.value)


def reduce_op(op: str, torch_op, tensor: torch.Tensor, rank: int) -> tuple[ReduceOp, float]:
    """ringrt's ReduceOp for torch's, and the PREMUL_SUM factor (1.0 otherwise).

    PREMUL_SUM (``dist._make_nccl_premul_sum(factor)``) is a SUM of the inputs each scaled by
    ``factor`` first, as NCCL defines it; floating tensors only.
    """
    kind = torch_op.op                    # opts.reduceOp is always a ReduceOp object
    ours = _REDUCE_OPS.get(kind)
    if ours is not None:
        return ours, 1.0
    if kind == dist.ReduceOp.PREMUL_SUM:
        if not (tensor.is_floating_point() or tensor.is_complex()):
            raise ValueError(f"{op}: PREMUL_SUM needs a floating tensor, got {tensor.dtype} on "
                             f"rank {rank}")
        return ReduceOp.SUM, float(torch_op.factor)
    raise ValueError(f"{op}: reduction {kind} is not supported by the ringrt backend on "
                     f"rank {rank}")


def splits(op: str, sizes, tensor: torch.Tensor, group_size: int, rank: int,
           name: str) -> list[int]:
    """Rows per peer of an all_to_all_single side: ``sizes`` or, when empty, equal parts."""
    rows = tensor.shape[0] if tensor.dim() else 1
    if not sizes:
        if rows % group_size:
            raise ValueError(f"{op}: {name}.shape[0]={rows} is not divisible by the group "
                             f"size {group_size} on rank {rank}; pass split sizes")
        return [rows // group_size] * group_size
    sizes = [int(s) for s in sizes]
    if len(sizes) != group_size or sum(sizes) != rows or min(sizes) < 0:
        raise ValueError(f"{op}: {name} split sizes {sizes} must be {group_size} non-negative "
                         f"row counts adding up to {name}.shape[0]={rows} on rank {rank}")
    return sizes


