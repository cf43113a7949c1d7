"""The table of torch collective cases: run by the ranks on a "ringrt" group and on a gloo
group made in the same job, and checked by the parent against a reference computed with
torch from every rank's regenerated inputs.

Inputs are small integers in the case's dtype (1..2 for PRODUCT), so sums, products and the
AVG's single division are exact or rounded the same way in every order: a correct result is
bit-exact, whatever the algorithm, and must equal gloo's bits wherever gloo runs the case.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64",
          "float16", "bfloat16", "float32", "float64", "complex64", "complex128"]
REDOPS = ["SUM", "AVG", "PRODUCT", "MIN", "MAX", "BAND", "BOR", "BXOR", "PREMUL_SUM"]
SIZES = [1, 7, 1023]
MOVES = ["broadcast", "all_gather", "all_gather_into_tensor", "gather", "scatter", "all_to_all",
         "all_to_all_single", "all_to_all_uneven"]
REDUCTIONS = ["reduce", "reduce_scatter", "reduce_scatter_tensor"]
BIG = 300_003                # float32: 1.2 MB, several shared-memory pieces; odd on purpose
PREMUL_FACTOR = 2.0


@dataclass(frozen=True)
class Case:
    name: str
    op: str
    dtype: str
    size: int                # elements per rank's input (per block for the list/*_tensor ops)
    redop: str = "SUM"
    root: int = 0
    layout: str = "contiguous"     # or channels_last / transposed (dense, not C-contiguous)


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def valid(dtype: str, redop: str) -> bool:
    """Whether torch itself accepts ``redop`` on ``dtype`` (torch refuses complex MIN/MAX/
    PRODUCT before any backend sees them)."""
    complex_ = dtype.startswith("complex")
    floating = dtype.startswith(("float", "bfloat")) or complex_
    if redop in ("AVG", "PREMUL_SUM"):
        return floating
    if redop in ("BAND", "BOR", "BXOR"):
        return not floating
    if complex_:
        return redop == "SUM"
    return True


def cases(world: int) -> list[Case]:
    table = []
    for dtype in DTYPES:
        for size in SIZES:
            for redop in REDOPS:
                if valid(dtype, redop):
                    table.append(Case(f"all_reduce/{dtype}/{size}/{redop}", "all_reduce", dtype,
                                      size, redop))
        for op in MOVES:
            table.append(Case(f"{op}/{dtype}", op, dtype, 7, root=world - 1))
        redop = "MAX" if dtype == "bool" else "SUM"
        for op in REDUCTIONS:
            table.append(Case(f"{op}/{dtype}", op, dtype, 7, redop, root=world // 2))
    for dtype in ("float32", "bfloat16", "float16", "int64"):
        table.append(Case(f"all_reduce/{dtype}/big", "all_reduce", dtype, BIG))
    table.append(Case("all_reduce/float32/big/AVG", "all_reduce", "float32", BIG, "AVG"))
    for op in ("broadcast", "reduce", "all_gather_into_tensor", "reduce_scatter_tensor",
               "all_to_all_single"):
        size = BIG if op in ("broadcast", "reduce") else BIG // 2
        table.append(Case(f"{op}/float32/big", op, "float32", size, root=world - 1))
    table += [Case("all_reduce/channels_last", "all_reduce", "float32", 2 * 3 * 4 * 5,
                   layout="channels_last"),
              Case("broadcast/channels_last", "broadcast", "float32", 2 * 3 * 4 * 5,
                   layout="channels_last", root=world - 1),
              Case("all_gather/transposed", "all_gather", "float32", 12, layout="transposed"),
              Case("all_gather_into_tensor/transposed", "all_gather_into_tensor", "float32", 12,
                   layout="transposed"),
              Case("reduce_scatter/transposed", "reduce_scatter", "float32", 12,
                   layout="transposed")]
    return table


def make_input(case: Case, rank: int, numel: int | None = None) -> torch.Tensor:
    """Rank ``rank``'s input: ``numel`` (default ``case.size``) small integers, 1-D."""
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/{rank}".encode()))
    low, high = (1, 3) if case.redop == "PRODUCT" else (0, 4)
    count = case.size if numel is None else numel
    if case.redop in ("BAND", "BOR", "BXOR"):
        high = 2 if case.dtype == "bool" else 16
    values = rng.integers(low, high, size=count)
    if case.dtype.startswith("complex"):
        values = values + 1j * rng.integers(0, 2, size=count)
    return torch.from_numpy(values).to(torch_dtype(case.dtype))


def block_input(case: Case, rank: int, world: int) -> torch.Tensor:
    """The list / *_tensor ops' input: ``world`` blocks of ``case.size`` elements."""
    return make_input(case, rank, world * case.size).reshape(world, case.size)


def uneven_splits(world: int, sender: int) -> list[int]:
    """Rows ``sender`` sends to each peer in the uneven all_to_all_single: 0, 1, 2, ..."""
    return [(sender + peer) % 3 for peer in range(world)]


def torch_op(redop: str):
    if redop == "PREMUL_SUM":
        return dist._make_nccl_premul_sum(PREMUL_FACTOR)
    return getattr(dist.ReduceOp, redop)


def _reduce(stacked: torch.Tensor, redop: str, dtype: torch.dtype, world: int) -> torch.Tensor:
    """The exact reduction over dim 0 (computed wide, then rounded once to ``dtype``)."""
    wide = torch.complex128 if dtype.is_complex else torch.float64
    if dtype not in (torch.int64, torch.bool) and not (dtype.is_floating_point or
                                                        dtype.is_complex):
        # integers: reduce as int64 (torch lacks most kernels for uint16/32/64); the inputs
        # are small, so nothing wraps
        return _reduce(stacked.to(torch.int64), redop, torch.int64, world).to(dtype)
    if dtype == torch.bool or redop in ("BAND", "BOR", "BXOR"):
        out = stacked[0].clone()
        fold = {"BAND": torch.bitwise_and, "BOR": torch.bitwise_or, "BXOR": torch.bitwise_xor,
                "SUM": torch.logical_or, "MAX": torch.logical_or, "MIN": torch.logical_and,
                "PRODUCT": torch.logical_and}[redop]
        for row in stacked[1:]:
            out = fold(out, row)
        return out.to(dtype)
    if redop == "MIN":
        return stacked.min(0).values
    if redop == "MAX":
        return stacked.max(0).values
    if redop == "PRODUCT":
        return stacked.to(wide).prod(0).to(dtype)
    factor = PREMUL_FACTOR if redop == "PREMUL_SUM" else 1.0
    total = (stacked.to(wide) * factor).sum(0)
    if dtype.is_floating_point or dtype.is_complex:
        total = total.to(dtype)
        if redop == "AVG" and dtype.is_complex:      # torch sends complex as (re, im) pairs
            total = torch.view_as_complex(torch.view_as_real(total) / world)
        elif redop == "AVG":
            total = (total.to(wide) / world).to(dtype) if dtype in (torch.float16,
                                                                     torch.bfloat16) \
                else total / world
        return total
    return total.to(dtype)


def expected(case: Case, world: int, rank: int) -> torch.Tensor | None:
    """What ``rank`` must hold after the case (see workers.run_case); None: nothing to check
    (a reduce's non-root tensor, which gloo uses as scratch)."""
    dtype = torch_dtype(case.dtype)
    if case.op in ("all_reduce", "reduce"):
        if case.op == "reduce" and rank != case.root:
            return None
        return _reduce(torch.stack([make_input(case, r) for r in range(world)]), case.redop,
                       dtype, world)
    if case.op in ("reduce_scatter", "reduce_scatter_tensor"):
        stacked = torch.stack([block_input(case, r, world) for r in range(world)])
        return _reduce(stacked, case.redop, dtype, world)[rank]
    if case.op == "broadcast":
        return make_input(case, case.root)
    if case.op in ("all_gather", "all_gather_into_tensor"):
        return torch.stack([make_input(case, r) for r in range(world)])
    if case.op == "gather":
        return torch.stack([make_input(case, r) for r in range(world)]) \
            if rank == case.root else None
    if case.op == "scatter":
        return block_input(case, case.root, world)[rank]
    if case.op in ("all_to_all", "all_to_all_single"):
        return torch.stack([block_input(case, r, world)[rank] for r in range(world)])
    if case.op == "all_to_all_uneven":
        pieces = []
        for sender in range(world):
            rows = uneven_splits(world, sender)
            start = sum(rows[:rank]) * case.size
            flat = make_input(case, sender, sum(rows) * case.size)
            pieces.append(flat[start:start + rows[rank] * case.size])
        return torch.cat(pieces)
    raise AssertionError(case.op)


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Bits of a result, saveable without pickle (bfloat16 as its int16 storage)."""
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy()
