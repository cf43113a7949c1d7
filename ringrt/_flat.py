"""Flat-buffer layout: many named arrays as views into one contiguous 1-D buffer.

DDP all-reduces gradient buckets and ZeRO reduce-scatters / all-gathers whole parameter sets;
both want one contiguous buffer so that a collective moves a slice, not a dict. A
:class:`FlatLayout` records where each named array lives::

    layout = FlatLayout({"w": (3, 2), "b": (2,)}, np.float32, pad_to=4)
    layout.offsets        # {"w": 0, "b": 6}; numel 8, padded_numel 8 (a multiple of 4)
    flat = layout.empty()
    views = layout.views(flat)     # {"w": flat[0:6].reshape(3, 2), "b": flat[6:8]}
    layout.shard_range(rank=1, world_size=4)   # (2, 4): rank 1 owns flat[2:4]

The padding (zeros at the end) makes ZeRO's even split possible for any parameter count, as in
Megatron's distributed optimizer. Pure logic: no communication here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np


def check_float_params(params: Mapping[str, np.ndarray], owner: str,
                       writable: bool = True) -> None:
    """Raise unless ``params`` is a non-empty dict of floating (and writable) ndarrays.

    Raises:
        ValueError: empty, or an array is read-only. TypeError: not a floating ndarray.
    """
    if not params:
        raise ValueError(f"{owner}: params is empty")
    for name, array in params.items():
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
            kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise TypeError(f"{owner}: params[{name!r}] must be a floating ndarray, got {kind}")
        if writable and not array.flags.writeable:
            raise ValueError(f"{owner}: params[{name!r}] is read-only")


@dataclass(frozen=True)
class FlatLayout:
    """Where each named array lives in one flat buffer, in ``names`` order.

    Attributes:
        shapes: name -> shape, in layout order (the order the arrays sit in the buffer).
        dtype: the buffer's dtype (one dtype per buffer).
        pad_to: ``padded_numel`` is rounded up to a multiple of this (e.g. the world size).
    """

    shapes: Mapping[str, tuple[int, ...]]
    dtype: np.dtype
    pad_to: int = 1
    offsets: Mapping[str, int] = field(init=False)
    numel: int = field(init=False)
    _spans: Mapping[str, tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.pad_to < 1:
            raise ValueError(f"FlatLayout: pad_to must be >= 1, got {self.pad_to}")
        shapes = {str(name): tuple(int(d) for d in shape) for name, shape in self.shapes.items()}
        spans, offset = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape, dtype=np.int64))
            spans[name], offset = (offset, offset + size), offset + size
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "offsets", {name: start for name, (start, _) in spans.items()})
        object.__setattr__(self, "numel", offset)
        object.__setattr__(self, "_spans", spans)     # span() runs per parameter per step

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray], order: Iterable[str] | None = None,
           pad_to: int = 1) -> FlatLayout:
        """The layout of ``arrays`` (all one dtype), in ``order`` (default: dict order)."""
        names = list(arrays) if order is None else list(order)
        dtypes = {np.dtype(arrays[name].dtype) for name in names}
        if len(dtypes) != 1:
            raise TypeError(
                f"one flat buffer holds one dtype, got {sorted(map(str, dtypes))}; cast the "
                "arrays to a common floating dtype first"
            )
        return cls({name: arrays[name].shape for name in names}, dtypes.pop(), pad_to)

    @property
    def names(self) -> list[str]:
        """Names in layout (buffer) order."""
        return list(self.shapes)

    @property
    def padded_numel(self) -> int:
        """Buffer length: ``numel`` rounded up to a multiple of ``pad_to``."""
        return -(-self.numel // self.pad_to) * self.pad_to

    @property
    def nbytes(self) -> int:
        return self.padded_numel * self.dtype.itemsize

    def span(self, name: str) -> tuple[int, int]:
        """``(start, stop)`` element range of ``name`` in the buffer."""
        return self._spans[name]

    def empty(self) -> np.ndarray:
        """A zeroed buffer of ``padded_numel`` elements (the padding must stay zero)."""
        return np.zeros(self.padded_numel, dtype=self.dtype)

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """name -> view of ``flat`` with the array's shape (writes go to ``flat``)."""
        self._check_buffer(flat)
        return {name: flat[slice(*self.span(name))].reshape(shape)
                for name, shape in self.shapes.items()}

    def flatten(self, arrays: Mapping[str, np.ndarray], out: np.ndarray | None = None,
                what: str = "arrays") -> np.ndarray:
        """Copy ``arrays`` into ``out`` (or a new buffer) at their offsets; padding is zeroed.

        Raises:
            KeyError: a name is missing or unknown. ValueError: a shape differs.
        """
        self.check_names(arrays, what)
        out = self.empty() if out is None else out
        self._check_buffer(out)
        for name, shape in self.shapes.items():
            array = np.asarray(arrays[name])
            if array.shape != shape:
                raise ValueError(f"{what}[{name!r}] has shape {array.shape}, expected {shape}")
            start, stop = self.span(name)
            out[start:stop] = array.reshape(-1)
        out[self.numel:] = 0
        return out

    def unflatten_into(self, flat: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy each array's slice of ``flat`` back into ``arrays[name]`` in place."""
        for name, view in self.views(flat).items():
            np.copyto(arrays[name], view)

    def copy_range_from(self, arrays: Mapping[str, np.ndarray], out: np.ndarray,
                        start: int, stop: int) -> None:
        """Fill ``out`` (``stop - start`` elements) with ``flatten(arrays)[start:stop]``.

        Copies only the overlapping parts, so a ZeRO rank reads just its shard.
        """
        for name in self.shapes:
            begin, end = self.span(name)
            lo, hi = max(begin, start), min(end, stop)
            if lo < hi:
                flat = np.asarray(arrays[name]).reshape(-1)
                out[lo - start:hi - start] = flat[lo - begin:hi - begin]
        if stop > self.numel:
            out[max(self.numel, start) - start:] = 0

    def shard_range(self, rank: int, world_size: int) -> tuple[int, int]:
        """``(start, stop)`` of rank's even share of the padded buffer (ZeRO's split).

        Raises:
            ValueError: ``padded_numel`` is not a multiple of ``world_size``.
        """
        if self.padded_numel % world_size:
            raise ValueError(
                f"a buffer of {self.padded_numel} elements does not split evenly over "
                f"{world_size} ranks; build the layout with pad_to={world_size}"
            )
        size = self.padded_numel // world_size
        return rank * size, (rank + 1) * size

    def check_names(self, arrays: Mapping[str, np.ndarray], what: str = "arrays") -> None:
        """Raise ``KeyError`` naming the missing and unknown names, if any."""
        missing = [name for name in self.shapes if name not in arrays]
        unknown = [name for name in arrays if name not in self.shapes]
        if missing or unknown:
            raise KeyError(
                f"{what} do not match the registered parameters: missing {missing}, "
                f"unknown {unknown}"
            )

    def to_json(self) -> dict:
        """A JSON-ready description (for checkpoint manifests and state dicts)."""
        return {
            "names": self.names,
            "shapes": [list(shape) for shape in self.shapes.values()],
            "dtype": self.dtype.str,
            "pad_to": self.pad_to,
            "numel": self.numel,
            "padded_numel": self.padded_numel,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> FlatLayout:
        """Inverse of :meth:`to_json`."""
        shapes = {name: tuple(shape) for name, shape in zip(data["names"], data["shapes"])}
        return cls(shapes, np.dtype(data["dtype"]), int(data["pad_to"]))

    def _check_buffer(self, flat: np.ndarray) -> None:
        if flat.shape != (self.padded_numel,) or flat.dtype != self.dtype:
            raise ValueError(
                f"flat buffer must be 1-D {self.dtype} of {self.padded_numel} elements, got "
                f"{flat.dtype} of shape {flat.shape}"
            )
