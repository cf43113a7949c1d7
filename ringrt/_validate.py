"""Argument checks run before the first byte of an op is sent.

Messages say what was expected, what was given, on which rank, and how to fix it, e.g.
``all_reduce: array must be C-contiguous (got strides (16, 8)) on rank 2; pass
np.ascontiguousarray(x)``.
"""

from __future__ import annotations

import numpy as np

from ringrt._comm.wire import DTYPE_CODES
from ringrt._dtypes import is_floating
from ringrt._dtypes import name as dtype_name
from ringrt._reduce_ops import ReduceOp

SUPPORTED = ", ".join(dtype_name(d) for d in DTYPE_CODES if d is not None)


def array(op: str, value, rank: int, name: str = "array", writable: bool = False) -> np.ndarray:
    """Check that ``value`` is a C-contiguous NumPy array of a supported dtype."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{op}: {name} must be a numpy.ndarray, got {type(value).__name__} on "
                        f"rank {rank}; wrap it with np.asarray(...)")
    if value.dtype not in DTYPE_CODES:
        raise TypeError(f"{op}: {name} has dtype {value.dtype} on rank {rank}, which ringrt "
                        f"cannot send; use one of {SUPPORTED} (objects: use the *_object ops)")
    if not value.flags.c_contiguous:
        raise ValueError(f"{op}: {name} must be C-contiguous (got strides {value.strides}) on "
                         f"rank {rank}; pass np.ascontiguousarray({name})")
    if writable:
        writable_array(op, value, rank, name)
    return value


def writable_array(op: str, value: np.ndarray, rank: int, name: str = "array") -> None:
    """Check that the op may write into ``value`` (after :func:`array` accepted it)."""
    if not value.flags.writeable:
        raise ValueError(f"{op}: {name} is read-only on rank {rank} but the op writes into it; "
                         f"pass a writable copy ({name}.copy())")


def array_list(op: str, values, length: int, rank: int, name: str, writable: bool = False,
               like: np.ndarray | None = None) -> list[np.ndarray]:
    """Check a list of ``length`` arrays, each valid and (with ``like``) of its shape/dtype."""
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{op}: {name} must be a list of arrays, got {type(values).__name__} on "
                        f"rank {rank}")
    if len(values) != length:
        raise ValueError(f"{op}: {name} has {len(values)} arrays on rank {rank} but the group "
                         f"has {length} ranks; pass one array per rank")
    checked = [array(op, v, rank, f"{name}[{i}]", writable) for i, v in enumerate(values)]
    if like is not None:
        for i, v in enumerate(checked):
            same_shape(op, v, like, rank, f"{name}[{i}]")
    return checked


def same_shape(op: str, value: np.ndarray, like: np.ndarray, rank: int, name: str) -> None:
    """Check ``value`` has ``like``'s dtype and element count."""
    if value.dtype != like.dtype or value.size != like.size:
        raise ValueError(f"{op}: {name} is {dtype_name(value.dtype)}[{value.size}] on rank {rank} "
                         f"but must match the input, {dtype_name(like.dtype)}[{like.size}]")


def root(op: str, value, members: list[int], rank: int, name: str) -> int:
    """Check that a root/src/dst is a global rank in the group; returns its group rank."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}: {name} must be an int rank, got {value!r} on rank {rank}")
    if int(value) not in members:
        raise ValueError(f"{op}: {name}={value} is not a rank of this group (ranks {members}) on "
                         f"rank {rank}")
    return members.index(int(value))


def reduce_op(op: str, value, dtype: np.dtype, rank: int) -> ReduceOp:
    """Check the reduction operator: AVG on floating dtypes only, MIN/MAX not on complex,
    the bitwise ones on integers and bools only."""
    try:
        chosen = ReduceOp(value)
    except ValueError:
        raise ValueError(f"{op}: op={value!r} is not a ReduceOp on rank {rank}; use "
                         "ringrt.ReduceOp.SUM, AVG, PRODUCT, MIN, MAX, BAND, BOR or BXOR") from None
    if chosen in _BITWISE and not (dtype == np.bool_ or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"{op}: ReduceOp.{chosen.name} needs an integer or bool dtype, got "
                         f"{dtype_name(dtype)} on rank {rank}")
    if chosen == ReduceOp.AVG and not is_floating(dtype):
        raise ValueError(f"{op}: ReduceOp.AVG needs a floating dtype, got {dtype_name(dtype)} "
                         f"on rank {rank}; use SUM and divide, or cast to float")
    if chosen in (ReduceOp.MIN, ReduceOp.MAX) and np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{op}: ReduceOp.{chosen.name} is not defined on complex numbers "
                         f"(got {dtype} on rank {rank}); reduce the real and imaginary parts "
                         "or the magnitudes instead")
    return chosen


_BITWISE = (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR)


def leading_dim(op: str, big: np.ndarray, small: np.ndarray, world: int, rank: int,
                big_name: str, small_name: str) -> None:
    """Check ``big`` holds ``world`` x ``small``, concatenated or stacked along dim 0 (the
    *_tensor ops accept both, as torch does), with the same dtype."""
    if big.dtype != small.dtype:
        raise ValueError(f"{op}: {big_name} is {dtype_name(big.dtype)} but {small_name} is "
                         f"{dtype_name(small.dtype)} on "
                         f"rank {rank}; they must match")
    concatenated = big.ndim >= 1 and small.ndim >= 1 and big.shape[0] == world * small.shape[0]
    stacked = big.shape == (world, *small.shape)
    if big.size != world * small.size or not (concatenated or stacked):
        raise ValueError(f"{op}: {big_name} has shape {big.shape} but must hold world_size "
                         f"({world}) x {small_name} {small.shape} on rank {rank}: either "
                         f"concatenated (shape[0] == {world} * {small.shape[0] if small.ndim else 1})"
                         f" or stacked (shape {(world, *small.shape)})")
