"""The table of collective cases shared by the ranks (which run them) and the parent (which
checks them against NumPy on the regenerated inputs of every rank).

Inputs are small integers stored in the case's dtype, so sums and products are exact in
every dtype and every summation order: a correct result is then bit-exact, whatever the
algorithm.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

ALL_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64", "complex64", "complex128"]
REDOPS = ["SUM", "AVG", "PRODUCT", "MIN", "MAX"]
SMALL_SIZES = [0, 1, 7, 1023]
BIG = 300_003                       # float32: 1.2 MB, above the 1 MiB line; odd on purpose


@dataclass(frozen=True)
class Case:
    name: str
    op: str
    dtype: str
    size: int          # elements per rank's input (per block for the *_tensor/list ops)
    redop: str = "SUM"
    root: int = 0


def make_input(case: Case, rank: int, shape_of=None) -> np.ndarray:
    """Rank ``rank``'s input for ``case``; values 0..3 (1..2 for PRODUCT, to stay exact)."""
    rng = np.random.default_rng(zlib.crc32(f"{case.name}/{rank}".encode()))
    low, high = (1, 3) if case.redop == "PRODUCT" else (0, 4)
    values = rng.integers(low, high, size=case.size if shape_of is None else shape_of)
    if case.dtype.startswith("complex"):      # Gaussian integers: products stay exact
        values = values + 1j * rng.integers(0, 2, size=values.shape)
    return values.astype(case.dtype)


def block_input(case: Case, rank: int, world: int) -> np.ndarray:
    """Input of the list / *_tensor ops: ``world`` blocks of ``case.size`` elements."""
    return make_input(case, rank, shape_of=world * case.size).reshape(world, case.size) \
        if case.size else np.zeros((world, 0), case.dtype)


def cases(world: int, big: bool = True) -> list[Case]:
    """Every (op, dtype, size, redop, root) combination run in one world."""
    table = []
    for dtype in ALL_DTYPES:
        floating = dtype.startswith(("float", "complex"))
        for size in SMALL_SIZES:
            for redop in REDOPS:
                if (redop == "AVG" and not floating) or \
                        (redop in ("MIN", "MAX") and dtype.startswith("complex")):
                    continue
                table.append(Case(f"all_reduce/{dtype}/{size}/{redop}", "all_reduce", dtype,
                                  size, redop))
            for op in ("broadcast", "all_gather", "all_gather_into_tensor", "gather",
                       "scatter", "all_to_all", "all_to_all_single"):
                table.append(Case(f"{op}/{dtype}/{size}", op, dtype, size, root=world - 1))
            for op in ("reduce", "reduce_scatter", "reduce_scatter_tensor"):
                redop = "MAX" if dtype == "bool" else "SUM"
                table.append(Case(f"{op}/{dtype}/{size}", op, dtype, size, redop,
                                  root=world // 2))
    if big:
        for dtype in ("float32", "int64", "float16"):
            table.append(Case(f"all_reduce/{dtype}/big", "all_reduce", dtype, BIG))
        table.append(Case("all_reduce/float64/big/AVG", "all_reduce", "float64", BIG, "AVG"))
        table.append(Case("all_reduce/float32/big/MAX", "all_reduce", "float32", BIG, "MAX"))
        for op in ("broadcast", "reduce", "all_gather_into_tensor", "reduce_scatter_tensor",
                   "all_to_all_single"):
            size = BIG if op in ("broadcast", "reduce") else BIG // 2
            table.append(Case(f"{op}/float32/big", op, "float32", size, root=world - 1))
    return table


def reference(case: Case, world: int):
    """What rank-independent result NumPy computes from every rank's regenerated input."""
    if case.op in ("all_reduce", "reduce"):
        stacked = np.stack([make_input(case, r) for r in range(world)])
        return _reduce(stacked, case)
    if case.op in ("reduce_scatter", "reduce_scatter_tensor"):
        stacked = np.stack([block_input(case, r, world) for r in range(world)])
        return _reduce(stacked, case)                 # [world, size]: block j for rank j
    if case.op in ("all_gather", "all_gather_into_tensor", "gather"):
        return np.stack([make_input(case, r) for r in range(world)])
    if case.op in ("scatter", "all_to_all", "all_to_all_single"):
        return np.stack([block_input(case, r, world) for r in range(world)])  # [src, dst, size]
    if case.op == "broadcast":
        return make_input(case, case.root)
    raise AssertionError(case.op)


def _reduce(stacked: np.ndarray, case: Case) -> np.ndarray:
    dtype = np.dtype(case.dtype)
    if case.redop in ("SUM", "AVG"):
        total = stacked.astype(np.float64 if dtype.kind == "f" else dtype).sum(axis=0)
        if dtype == np.bool_:
            return stacked.any(axis=0)
        total = total.astype(dtype)
        if case.redop == "AVG":
            total = (total / dtype.type(len(stacked))).astype(dtype)
        return total
    if case.redop == "PRODUCT":
        if dtype == np.bool_:
            return stacked.all(axis=0)
        return np.prod(stacked.astype(np.float64 if dtype.kind == "f" else dtype),
                       axis=0).astype(dtype)
    if case.redop == "MIN":
        return stacked.min(axis=0)
    return stacked.max(axis=0)


def same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    """Bit-identical, except the sign of a zero in complex results: a product of complex
    numbers is exact here, but whether an exactly-zero part comes out as +0.0 or -0.0
    depends on the order the factors were multiplied in, which differs per algorithm."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if np.issubdtype(got.dtype, np.complexfloating):
        got, want = got + 0.0, want + 0.0          # -0.0 + 0.0 == +0.0
    return got.tobytes() == want.tobytes()


def expected_for_rank(case: Case, world: int, rank: int) -> np.ndarray:
    """The array ``rank`` must end with (see workers.run_case for what it returns)."""
    ref = reference(case, world)
    if case.op == "all_reduce" or case.op == "broadcast":
        return ref
    if case.op == "reduce":
        return ref if rank == case.root else make_input(case, rank)
    if case.op in ("reduce_scatter", "reduce_scatter_tensor"):
        return ref[rank]
    if case.op in ("all_gather", "all_gather_into_tensor"):
        return ref
    if case.op == "gather":
        return ref if rank == case.root else np.zeros((0,), case.dtype)
    if case.op == "scatter":
        return ref[case.root, rank]
    if case.op in ("all_to_all", "all_to_all_single"):
        return ref[:, rank]
    raise AssertionError(case.op)
