"""torch tensors as NumPy arrays over the same memory, and the checks every op makes first.

:func:`flat` views a CPU tensor's memory as a 1-D NumPy array, in memory order, without a
copy (``tensor.numpy()`` shares the storage), so ringrt's collectives read and write the
tensor itself, through shared memory on one host. bfloat16 tensors are viewed as ringrt's
bfloat16 dtype (``ringrt._dtypes``).

Layouts: any dense tensor torch hands over works zero-copy where one tensor is reduced or
moved in place (all_reduce, broadcast, reduce, send, recv): a channels-last tensor is dense
in another order, and every rank uses the same order. Where several tensors meet (gather
into a list, scatter, all_to_all, ...), elements must line up in logical order, so a dense
tensor that is not C-contiguous goes through a contiguous copy (:class:`Staging`). Anything
else -- a CUDA tensor, a sparse one, a strided slice with gaps, an unsupported dtype --
raises ``TypeError``/``ValueError`` on the calling rank before anything is sent.
"""

from __future__ import annotations

import numpy as np
import torch

from ringrt._dtypes import BFLOAT16

NUMPY_DTYPES = {
    torch.bool: np.dtype(np.bool_), torch.uint8: np.dtype(np.uint8),
    torch.int8: np.dtype(np.int8), torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32), torch.int64: np.dtype(np.int64),
    torch.uint16: np.dtype(np.uint16), torch.uint32: np.dtype(np.uint32),
    torch.uint64: np.dtype(np.uint64), torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64), torch.complex128: np.dtype(np.complex128),
    torch.bfloat16: BFLOAT16,
}
SUPPORTED = ", ".join(str(d).removeprefix("torch.") for d in NUMPY_DTYPES)


def check(op: str, tensor, rank: int, name: str = "tensor") -> torch.Tensor:
    """Check that ``tensor`` is a dense CPU tensor of a dtype ringrt carries.

    Raises:
        TypeError: not a tensor, not on the CPU, sparse, or an unsupported dtype.
        ValueError: not dense (a slice with gaps, overlapping or broadcast strides).
    """
    if is_plain(tensor):
        return tensor                         # the common case, checked in one go
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__} on "
                        f"rank {rank}")
    if tensor.device.type != "cpu":
        raise TypeError(f"{op}: {name} is on {tensor.device} on rank {rank}, but the ringrt "
                        "backend moves CPU tensors only; pass tensor.cpu(), or give this "
                        "device its own backend (init_process_group('cpu:ringrt,cuda:nccl'))")
    if tensor.layout != torch.strided:
        raise TypeError(f"{op}: {name} has layout {tensor.layout} on rank {rank}; the ringrt "
                        "backend moves dense tensors only: pass tensor.to_dense()")
    if tensor.dtype not in NUMPY_DTYPES:
        raise TypeError(f"{op}: {name} has dtype {tensor.dtype} on rank {rank}, which the "
                        f"ringrt backend cannot carry; use one of {SUPPORTED}")
    if memory_order(tensor) is None:
        raise ValueError(f"{op}: {name} must be contiguous (got shape {tuple(tensor.shape)}, "
                         f"strides {tensor.stride()}) on rank {rank}; pass tensor.contiguous()")
    if tensor.is_conj() or tensor.is_neg():
        raise ValueError(f"{op}: {name} has a lazy conjugate/negative bit on rank {rank}; "
                         "pass tensor.resolve_conj().resolve_neg()")
    return tensor


def is_plain(tensor) -> bool:
    """Whether ``tensor`` is a dense, C-contiguous CPU tensor of a dtype ringrt carries, with
    no lazy conjugate/negative bit: what :func:`check` lets through without a question."""
    return isinstance(tensor, torch.Tensor) and tensor.is_cpu \
        and tensor.layout is torch.strided and tensor.dtype in NUMPY_DTYPES \
        and tensor.is_contiguous() and not (tensor.is_conj() or tensor.is_neg())


def memory_order(tensor: torch.Tensor) -> list[int] | None:
    """The dimensions from outermost to innermost in memory if ``tensor`` is dense (covers
    its storage span with no gaps or overlaps), else None."""
    if tensor.is_contiguous():
        return list(range(tensor.dim()))
    order = sorted(range(tensor.dim()), key=lambda d: -tensor.stride(d))
    expected = 1
    for dim in reversed(order):
        if tensor.size(dim) != 1 and tensor.stride(dim) != expected:
            return None
        expected *= tensor.size(dim)
    return order


def flat(tensor: torch.Tensor) -> np.ndarray:
    """A 1-D NumPy view of a checked (dense) tensor's memory, in memory order (no copy).

    A dense tensor's elements fill ``numel`` consecutive slots from its data pointer (torch
    strides are never negative), whatever the order of its dimensions.
    """
    array = np.asarray(_Memory(tensor))
    return array.view(BFLOAT16) if tensor.dtype == torch.bfloat16 else array


class _Memory:
    """A tensor's memory as NumPy's ``__array_interface__``; the array keeps it (and so the
    tensor) alive. Unlike ``tensor.numpy()``, this leaves the storage resizable: torch marks a
    storage non-resizable for good once ``.numpy()`` viewed it, and FSDP frees its unsharded
    parameters by resizing their storage to 0."""

    __slots__ = ("__array_interface__", "tensor")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor
        self.__array_interface__ = {
            "data": (tensor.data_ptr(), False), "shape": (tensor.numel(),),
            "typestr": _TYPESTR[tensor.dtype], "version": 3}


_TYPESTR = {t: (np.dtype(np.uint16) if d == BFLOAT16 else d).str
            for t, d in NUMPY_DTYPES.items()}


class Staging:
    """1-D arrays in logical element order for the tensors of a multi-tensor op.

    C-contiguous tensors are viewed in place; any other (dense) tensor is copied to a
    contiguous one first, and :meth:`copy_back` writes the outputs among them back once the
    op is done.
    """

    def __init__(self):
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def input(self, tensor: torch.Tensor) -> np.ndarray:
        """A view of an input (read by the op)."""
        return flat(tensor if tensor.is_contiguous() else tensor.contiguous())

    def output(self, tensor: torch.Tensor) -> np.ndarray:
        """A view of an output (written by the op)."""
        if tensor.is_contiguous():
            return flat(tensor)
        staged = tensor.detach().contiguous()
        self._pending.append((tensor, staged))
        return flat(staged)

    def copy_back(self) -> None:
        """Copy staged outputs into the caller's tensors (after the op)."""
        with torch.no_grad():
            for tensor, staged in self._pending:
                tensor.copy_(staged)
        self._pending.clear()
