"""``ArrayDataset`` / ``NpyDataset``: rows of in-memory or memory-mapped arrays.

Both have ``get_batch(indices)``, which :class:`ringrt.data.DataLoader` prefers to stacking
rows one by one. Public through :mod:`ringrt.data`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np


class ArrayDataset:
    """Rows of equal-length arrays: ``dataset[i] == (a[i], b[i], ...)``.

    Args:
        *arrays: arrays (or array-likes) sharing their first dimension; kept without copying.

    Raises:
        ValueError: no arrays, a 0-d array, or first dimensions that differ.
    """

    def __init__(self, *arrays: Any):
        self.arrays = tuple(np.asarray(array) for array in arrays)
        _check_rows("ArrayDataset", self.arrays, [f"array {i}" for i in range(len(arrays))])

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(array[index] for array in self.arrays)

    def get_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, ...]:
        """Return the rows at ``indices`` of every array (fresh arrays, in that order)."""
        rows = np.asarray(indices, dtype=np.intp)
        return tuple(array[rows] for array in self.arrays)


class NpyDataset:
    """Rows of ``.npy`` files opened memory-mapped, so a rank reads only the rows it uses.

    ``dataset[i] == (a[i], b[i], ...)`` with ``a, b, ...`` the files' arrays.

    Args:
        *paths: ``.npy`` files (written by ``numpy.save``) sharing their first dimension.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: no paths, a file cannot be memory-mapped (``.npz``, object dtype,
            0-d), or first dimensions that differ.
    """

    def __init__(self, *paths: Any):
        self.paths = tuple(os.fspath(path) for path in paths)
        self.arrays = tuple(_open_npy(path) for path in self.paths)
        _check_rows("NpyDataset", self.arrays, list(self.paths))

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        return tuple(np.array(array[index]) for array in self.arrays)

    def get_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, ...]:
        """Return copies of the rows at ``indices`` (read in ascending order, then reordered)."""
        rows = np.asarray(indices, dtype=np.intp)
        order = np.argsort(rows, kind="stable")
        ascending = rows[order]
        return tuple(_reordered(np.asarray(array[ascending]), order) for array in self.arrays)


def _reordered(ascending_rows: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Undo the sort: row ``k`` of the result is ``ascending_rows[position of k]``."""
    result = np.empty_like(ascending_rows)
    result[order] = ascending_rows
    return result


def _open_npy(path: str) -> np.ndarray:
    """Memory-map one ``.npy`` file read-only, with errors that name the file."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"NpyDataset: no such file {path!r}") from None
    except ValueError as exc:
        raise ValueError(
            f"NpyDataset: cannot memory-map {path!r} ({exc}); save a numeric array with numpy.save"
        ) from exc
    if not isinstance(array, np.ndarray):
        array.close()
        raise ValueError(
            f"NpyDataset: {path!r} is an .npz archive; save each array to its own .npy file "
            "(numpy.save) and pass those paths"
        )
    return array


def _check_rows(owner: str, arrays: Sequence[np.ndarray], labels: Sequence[str]) -> None:
    """Raise ValueError unless there is at least one array and all have the same row count."""
    if not arrays:
        raise ValueError(f"{owner} needs at least one array")
    for array, label in zip(arrays, labels, strict=True):
        if array.ndim == 0:
            raise ValueError(f"{owner}: {label} is 0-d; each array needs a first (row) dimension")
    lengths = {label: len(array) for array, label in zip(arrays, labels, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{owner}: arrays must have the same number of rows (first dimension), got "
            + ", ".join(f"{label}: {n}" for label, n in lengths.items())
        )
