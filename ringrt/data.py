"""Data loading for data-parallel training: a distributed sampler, a prefetching loader, datasets.

``DistributedSampler`` gives each rank an equal, disjoint slice of every epoch with
torch's index formula; ``DataLoader`` turns indices into stacked NumPy batches on a
background thread; ``ArrayDataset`` / ``NpyDataset`` serve rows of in-memory or
memory-mapped arrays (a rank reads only its own rows).

Resuming mid-epoch (neither repeating nor skipping samples)::

    sampler = DistributedSampler(dataset, shuffle=True, seed=1234)
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)
    start_epoch = 0
    if checkpoint is not None:
        loader.load_state_dict(checkpoint["loader"])  # sampler: epoch, seed, position
        start_epoch = sampler.epoch
    for epoch in range(start_epoch, num_epochs):
        sampler.set_epoch(epoch)        # the loaded epoch keeps its resume position
        for batch in loader:
            train_step(batch)
            if time_to_save:
                save({"loader": loader.state_dict(), ...})

The loader reads ahead on its thread, so it tells the sampler how many samples the
training loop has actually received (:meth:`DistributedSampler.record_consumed`); the
saved position is what you consumed, never what was prefetched. Every rank consumes the
same number of batches, so any rank's ``loader.state_dict()`` serves all ranks.
"""

from __future__ import annotations

import itertools
import operator
import os
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["DistributedSampler", "DataLoader", "ArrayDataset", "NpyDataset"]

# How often a waiting thread re-checks for shutdown or a dead peer thread. Short enough that
# closing a loader returns promptly; long enough that idle polling costs nothing measurable.
_POLL_S = 0.05
# How long closing a loader waits for its thread to finish the batch it is loading.
_JOIN_TIMEOUT_S = 5.0
_THREAD_NAME = "ringrt-data-prefetch"


# ---------------------------------------------------------------------------------------------
# Sampler


def _dataset_length(dataset: Any) -> int:
    """Return ``len(dataset)``, or ``dataset`` itself when it is an int (a length)."""
    if isinstance(dataset, (int, np.integer)) and not isinstance(dataset, bool):
        if dataset < 0:
            raise ValueError(f"DistributedSampler: dataset length must be >= 0, got {dataset}")
        return int(dataset)
    try:
        return len(dataset)
    except TypeError:
        raise TypeError(
            "DistributedSampler: dataset must have __len__ or be an int (its length), got "
            f"{type(dataset).__name__}"
        ) from None


def _default_group(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Fill a missing ``num_replicas`` / ``rank`` from the initialised default process group."""
    if num_replicas is not None and rank is not None:
        return num_replicas, rank
    import ringrt  # lazily: ringrt's __init__ may import this module

    is_initialized = getattr(ringrt, "is_initialized", None)
    if is_initialized is None or not is_initialized():
        raise ValueError(
            "DistributedSampler: num_replicas/rank default to the process group, but none is "
            "initialised; pass num_replicas= and rank= or call ringrt.init_process_group() first"
        )
    if num_replicas is None:
        num_replicas = ringrt.get_world_size()
    if rank is None:
        rank = ringrt.get_rank()
    return num_replicas, rank


def _check_int(owner: str, name: str, value: Any, low: int) -> int:
    """Return ``value`` as int, raising ValueError unless it is an integer >= ``low``."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be an int, got {value!r}") from None
    if isinstance(value, bool) or number < low:
        raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    return number


class DistributedSampler:
    """Split each epoch's indices evenly over the ranks, exactly as torch does.

    With ``n = len(dataset)`` and ``R = num_replicas``: ``num_samples = ceil((n - R) / R)``
    if ``drop_last`` and ``n % R != 0``, else ``ceil(n / R)``; the epoch's order is
    ``numpy.random.default_rng(seed + epoch).permutation(n)`` (or ``arange(n)`` without
    shuffle), padded by repeating from its start to ``num_samples * R`` (or truncated to it
    with ``drop_last``); rank ``r`` takes ``order[r::R]``. Every rank gets ``num_samples``
    indices, and together they cover the dataset::

        # n = 10, R = 3, shuffle=False
        # rank 0: [0, 3, 6, 9]   rank 1: [1, 4, 7, 0]   rank 2: [2, 5, 8, 1]

    Call :meth:`set_epoch` at the start of every epoch, or every epoch has the same order.

    Args:
        dataset: anything with ``__len__``, or an int (the dataset's length).
        num_replicas: number of ranks sharing the data; defaults to the world size of the
            initialised process group.
        rank: this rank, in ``[0, num_replicas)``; defaults to the process group's rank.
        shuffle: shuffle the indices (differently each epoch).
        seed: shuffling seed, the same on every rank (>= 0).
        drop_last: drop the tail so ranks split evenly, instead of padding by repetition.

    Raises:
        ValueError: no process group to default from, or an argument is out of range.
        TypeError: ``dataset`` has no length.
    """

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ):
        owner = "DistributedSampler"
        num_replicas, rank = _default_group(num_replicas, rank)
        self.num_replicas = _check_int(owner, "num_replicas", num_replicas, 1)
        self.rank = _check_int(owner, "rank", rank, 0)
        if self.rank >= self.num_replicas:
            raise ValueError(
                f"{owner}: invalid rank {rank}; it must be in [0, {self.num_replicas - 1}] "
                f"for num_replicas={self.num_replicas}"
            )
        self.dataset = dataset
        self.dataset_length = _dataset_length(dataset)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = _check_int(owner, "seed", seed, 0)
        self.epoch = 0
        self.num_samples = _num_samples(self.dataset_length, self.num_replicas, self.drop_last)
        self.total_size = self.num_samples * self.num_replicas
        self._resume_at = 0  # indices to skip at the next __iter__ (set by load_state_dict)
        self._start = 0  # where the current iteration started in the epoch
        self._yielded = 0  # position reached by our own iterator (may run ahead of a consumer)
        self._consumed: int | None = None  # as reported by a consumer (record_consumed)

    def __len__(self) -> int:
        """Indices per epoch on this rank (the full epoch, also when resuming mid-epoch)."""
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        """Return an iterator over this rank's indices (Python ints) for the current epoch.

        After :meth:`load_state_dict` the first iteration starts where the saved one stopped.
        """
        start, self._resume_at = self._resume_at, 0
        self._start = self._yielded = start
        self._consumed = None
        return self._count_yielded(self.indices()[start:].tolist())

    def _count_yielded(self, indices: list[int]) -> Iterator[int]:
        """Yield ``indices``, advancing our own position as each one is handed out."""
        for index in indices:
            self._yielded += 1
            yield index

    def indices(self) -> np.ndarray:
        """Return this rank's full index array for the current epoch (no resume offset)."""
        n, total = self.dataset_length, self.total_size
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        # np.resize repeats cyclically: exactly torch's `indices += indices[:padding]` (and its
        # whole-list repetition when padding > n), or a truncation when drop_last.
        return np.resize(order, total)[self.rank : total : self.num_replicas]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which seeds the shuffle; call it before each epoch, on every rank.

        Setting the epoch that :meth:`load_state_dict` restored keeps the resume position;
        any other epoch starts from its beginning.

        Args:
            epoch: the epoch number (>= 0).
        """
        epoch = _check_int("DistributedSampler.set_epoch", "epoch", epoch, 0)
        if epoch != self.epoch:
            self._resume_at = self._start = self._yielded = 0
            self._consumed = None
        self.epoch = epoch

    def record_consumed(self, count: int) -> None:
        """Tell the sampler that ``count`` more of its indices reached the training loop.

        A consumer that reads ahead (the prefetching :class:`DataLoader`) calls this as it
        hands out each batch, so :meth:`state_dict` counts what was consumed rather than what
        was prefetched. Once called during an iteration, only reported counts are used.

        Args:
            count: number of indices just consumed (>= 0).
        """
        base = self._start if self._consumed is None else self._consumed
        self._consumed = base + _check_int("record_consumed", "count", count, 0)

    def state_dict(self) -> dict[str, Any]:
        """Return the sampler's position: epoch, seed and samples of this epoch consumed.

        Returns:
            A dict of plain ints/bools, e.g. ``{"epoch": 3, "seed": 0, "consumed": 40,
            "num_replicas": 4, "dataset_length": 1000, "shuffle": True, "drop_last": False}``.
        """
        consumed = self._yielded if self._consumed is None else self._consumed
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "consumed": consumed,
            "num_replicas": self.num_replicas,
            "dataset_length": self.dataset_length,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`; the next iteration resumes there.

        Args:
            state: a dict from :meth:`state_dict` (of any rank: all ranks advance together).

        Raises:
            KeyError: ``state`` lacks an entry.
            ValueError: it was saved for a different dataset length, world size, shuffle or
                drop_last setting mid-epoch, where the positions would not line up.
        """
        owner = "DistributedSampler.load_state_dict"
        missing = [key for key in ("epoch", "seed", "consumed") if key not in state]
        if missing:
            raise KeyError(f"{owner}: state lacks {missing}; pass what state_dict() returned")
        consumed = _check_int(owner, "consumed", state["consumed"], 0)
        if consumed:
            self._check_same_layout(owner, state)
        if consumed > self.num_samples:
            raise ValueError(
                f"{owner}: consumed={consumed} exceeds the {self.num_samples} samples per epoch"
            )
        self.epoch = _check_int(owner, "epoch", state["epoch"], 0)
        self.seed = _check_int(owner, "seed", state["seed"], 0)
        self._resume_at = self._start = self._yielded = consumed
        self._consumed = None

    def _check_same_layout(self, owner: str, state: Mapping[str, Any]) -> None:
        """Raise ValueError if ``state`` splits the epoch differently from this sampler."""
        for key in ("dataset_length", "num_replicas", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"{owner}: the state was saved mid-epoch with {key}={state[key]!r} but this "
                    f"sampler has {key}={getattr(self, key)!r}, so the remaining indices cannot "
                    "be recovered; resume with the same setting, or restart the epoch by "
                    "setting state['consumed'] = 0"
                )


def _num_samples(n: int, replicas: int, drop_last: bool) -> int:
    """torch's per-rank sample count, in integer arithmetic (ceil(a / b) == -(-a // b))."""
    if drop_last and n % replicas != 0:
        return -(-(n - replicas) // replicas)
    return -(-n // replicas)


# ---------------------------------------------------------------------------------------------
# Loader


class DataLoader:
    """Iterate over a dataset in stacked NumPy batches, loading ahead on a background thread.

    Batches hold ``batch_size`` indices from ``sampler`` (or, without one, all indices in
    order, or shuffled when ``shuffle=True``). A dataset row ``dataset[i]`` that is a tuple
    of arrays/scalars becomes a tuple of stacked arrays (a dict becomes a dict, a single
    array one stacked array); a dataset with ``get_batch(indices)`` (``ArrayDataset``,
    ``NpyDataset``) is asked for whole batches instead, which is much faster::

        loader = DataLoader(ArrayDataset(x, y), batch_size=4, sampler=sampler)
        for xb, yb in loader:       # xb.shape == (4, *x.shape[1:])
            ...

    Up to ``prefetch`` loaded batches wait in a bounded queue filled by a daemon thread;
    an exception raised while loading is re-raised here, in the consumer. Leaving the loop
    early (``break``, an exception, or dropping the iterator) stops and joins the thread.
    Without a sampler, the internal shuffle advances to a new order after each complete pass.
    Saving and resuming mid-epoch: see :meth:`state_dict` and the module docstring.

    Args:
        dataset: anything with ``__getitem__`` (and ``__len__`` when there is no sampler),
            optionally with ``get_batch(indices)``.
        batch_size: indices per batch (>= 1).
        sampler: an iterable of indices, e.g. a :class:`DistributedSampler`; mutually
            exclusive with ``shuffle``.
        shuffle: without a sampler, visit the indices in a fresh random order each pass.
        drop_last: drop the final batch when it is smaller than ``batch_size``.
        prefetch: batches to load ahead (>= 0; 0 loads synchronously, with no thread).
        seed: without a sampler, the shuffle's seed (pass ``k`` is shuffled with
            ``seed + k``), so runs and resumes are reproducible.

    Raises:
        TypeError: ``dataset`` cannot be indexed, or has no length and no sampler is given.
        ValueError: both ``sampler`` and ``shuffle`` given, or a count is out of range.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        sampler: Iterable[int] | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
        prefetch: int = 2,
        seed: int = 0,
    ):
        self.dataset = _check_dataset(dataset, need_length=sampler is None)
        self.batch_size = _check_int("DataLoader", "batch_size", batch_size, 1)
        self.prefetch = _check_int("DataLoader", "prefetch", prefetch, 0)
        self.drop_last = bool(drop_last)
        if sampler is not None and shuffle:
            raise ValueError(
                "DataLoader: sampler and shuffle=True are mutually exclusive; shuffle in the "
                "sampler instead (DistributedSampler(..., shuffle=True))"
            )
        self._own_sampler = sampler is None
        if sampler is None:
            sampler = DistributedSampler(len(dataset), 1, 0, shuffle=shuffle, seed=seed)
        self.sampler = sampler
        self._batches_consumed = 0  # batches handed out in the current (or last) pass
        self._resume_batches = 0  # value _batches_consumed starts from at the next pass
        self._skip_batches = 0  # batches to skip for a sampler that cannot restore itself

    def __len__(self) -> int:
        """Batches in a full pass (also when the next pass resumes mid-epoch)."""
        try:
            samples = len(self.sampler)
        except TypeError:
            raise TypeError("DataLoader: its sampler has no len(), so neither has it") from None
        if self.drop_last:
            return samples // self.batch_size
        return -(-samples // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        """Start a pass; the background thread starts with the first ``next()``."""
        indices = iter(self.sampler)  # here, not on the thread: applies a resume offset now
        report = getattr(self.sampler, "record_consumed", None)
        if report is not None:
            report(0)  # from now on the sampler counts what we hand out, not what we read
        self._batches_consumed, self._resume_batches = self._resume_batches, 0
        batches = _index_batches(indices, self.batch_size, self.drop_last)
        if self._skip_batches:
            batches = itertools.islice(batches, self._skip_batches, None)
            self._skip_batches = 0
        if self.prefetch:
            source = _prefetched(batches, self.dataset, self.prefetch)
        else:
            source = _loaded(batches, self.dataset)
        return self._hand_out(source, report)

    def _hand_out(self, source: Iterator[tuple[Any, int]], report: Any) -> Iterator[Any]:
        """Yield the loaded batches, counting each as consumed as it reaches the caller."""
        try:
            for batch, count in source:
                self._batches_consumed += 1
                if report is not None:
                    report(count)
                yield batch
        finally:
            source.close()  # on break/GC too: stops and joins the prefetch thread
        if self._own_sampler:
            self.sampler.set_epoch(self.sampler.epoch + 1)
            self._batches_consumed = 0

    def state_dict(self) -> dict[str, Any]:
        """Return the loader's position, counting only batches the training loop received.

        Returns:
            ``{"batches_consumed": int, "sampler": sampler.state_dict()}`` (the ``"sampler"``
            entry only when the sampler has ``state_dict``), in plain types. Save it at any
            point, mid-epoch included; prefetched batches are not counted.
        """
        state: dict[str, Any] = {"batches_consumed": self._batches_consumed}
        sampler_state = getattr(self.sampler, "state_dict", None)
        if sampler_state is not None:
            state["sampler"] = sampler_state()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`; the next pass continues from it.

        The sampler restores its epoch, seed and position. A sampler without
        ``load_state_dict`` is assumed deterministic, and the next pass skips the batches
        already consumed (drawing their indices without loading them).

        Args:
            state: a dict from :meth:`state_dict`.

        Raises:
            KeyError: ``state`` lacks ``"batches_consumed"``.
            ValueError: the sampler rejects its saved state.
        """
        if "batches_consumed" not in state:
            raise KeyError(
                "DataLoader.load_state_dict: state lacks 'batches_consumed'; pass what "
                "DataLoader.state_dict() returned"
            )
        consumed = _check_int(
            "DataLoader.load_state_dict", "batches_consumed", state["batches_consumed"], 0
        )
        load = getattr(self.sampler, "load_state_dict", None)
        if load is not None and "sampler" in state:
            load(state["sampler"])
            self._skip_batches = 0
        else:
            self._skip_batches = consumed
        self._resume_batches = self._batches_consumed = consumed


def _check_dataset(dataset: Any, need_length: bool) -> Any:
    """Return ``dataset`` if a loader can index it, else raise a TypeError saying why not."""
    if not (hasattr(dataset, "get_batch") or hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"DataLoader: dataset {type(dataset).__name__} has neither __getitem__ nor "
            "get_batch; wrap arrays in ArrayDataset(...) or .npy files in NpyDataset(...)"
        )
    if need_length and not hasattr(dataset, "__len__"):
        raise TypeError(
            f"DataLoader: dataset {type(dataset).__name__} has no __len__; give it one or pass "
            "a sampler"
        )
    return dataset


def _index_batches(indices: Iterator[int], batch_size: int, drop_last: bool):
    """Group an index iterator into lists of ``batch_size`` (the last may be short)."""
    while True:
        batch = list(itertools.islice(indices, batch_size))
        if not batch or (drop_last and len(batch) < batch_size):
            return
        yield batch


def _fetch(dataset: Any, indices: list[int]) -> Any:
    """Load one batch: the dataset's ``get_batch`` if it has one, else stacked rows."""
    get_batch = getattr(dataset, "get_batch", None)
    if get_batch is not None:
        return get_batch(indices)
    return _collate([dataset[index] for index in indices])


def _collate(rows: Sequence[Any]) -> Any:
    """Stack rows: tuples column-wise into a tuple, dicts key-wise, else into one array."""
    first = rows[0]
    if isinstance(first, (tuple, list)):
        return tuple(np.stack(column) for column in zip(*rows, strict=True))
    if isinstance(first, Mapping):
        return {key: np.stack([row[key] for row in rows]) for key in first}
    return np.stack(rows)


def _loaded(batches: Iterator[list[int]], dataset: Any) -> Iterator[tuple[Any, int]]:
    """Load batches synchronously (``prefetch=0``), yielding (batch, number of indices)."""
    for indices in batches:
        yield _fetch(dataset, indices), len(indices)


def _prefetched(
    batches: Iterator[list[int]], dataset: Any, depth: int
) -> Iterator[tuple[Any, int]]:
    """Load batches on a daemon thread, ``depth`` ahead; yield (batch, number of indices).

    Closing this generator (exhaustion, error, ``break``, garbage collection) stops and joins
    the thread. An exception the thread hits is re-raised here.
    """
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(
        target=_produce, args=(batches, dataset, out, stop), name=_THREAD_NAME, daemon=True
    )
    thread.start()
    try:
        while True:
            kind, payload, count = _receive(out, thread)
            if kind == "done":
                return
            if kind == "error":
                raise payload
            yield payload, count
    finally:
        _shutdown(thread, out, stop)


def _produce(
    batches: Iterator[list[int]], dataset: Any, out: queue.Queue, stop: threading.Event
) -> None:
    """Thread body: put ("batch", data, count) items, then ("done",) or ("error", exc)."""
    try:
        for indices in batches:
            if stop.is_set():
                return
            if not _put(out, ("batch", _fetch(dataset, indices), len(indices)), stop):
                return
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the consumer
        if hasattr(exc, "add_note"):
            exc.add_note("(raised in the DataLoader prefetch thread while loading a batch)")
        _put(out, ("error", exc, 0), stop)
    else:
        _put(out, ("done", None, 0), stop)


def _put(out: queue.Queue, item: tuple, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; return whether it was put."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _receive(out: queue.Queue, thread: threading.Thread) -> tuple:
    """Wait for the next item, in bounded polls that notice if the thread died silently."""
    while True:
        try:
            return out.get(timeout=_POLL_S)
        except queue.Empty:
            if not thread.is_alive() and out.empty():
                raise RuntimeError(
                    "DataLoader: the prefetch thread exited without reporting a result; "
                    "please report this ringrt bug"
                ) from None


def _shutdown(thread: threading.Thread, out: queue.Queue, stop: threading.Event) -> None:
    """Stop the thread, free its queued batches and join it (for at most _JOIN_TIMEOUT_S)."""
    stop.set()
    while True:
        try:
            out.get_nowait()
        except queue.Empty:
            break
    thread.join(timeout=_JOIN_TIMEOUT_S)
    if thread.is_alive():
        warnings.warn(
            f"DataLoader: the prefetch thread is still loading a batch {_JOIN_TIMEOUT_S:g} s "
            "after the loop stopped; it is a daemon thread and exits when that load returns",
            RuntimeWarning,
            stacklevel=2,
        )


# ---------------------------------------------------------------------------------------------
# Datasets


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
