"""``DataLoader``: stacked NumPy batches from a sampler's indices, read ahead on a thread.

Public through :mod:`ringrt.data`; its docstring has the mid-epoch resume recipe.
"""

from __future__ import annotations

import itertools
import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ringrt.data._sampler import DistributedSampler, _check_int

# How often a waiting thread re-checks for shutdown or a dead peer thread. Short enough that
# closing a loader returns promptly; long enough that idle polling costs nothing measurable.
_POLL_S = 0.05
# How long closing a loader waits for its thread to finish the batch it is loading.
_JOIN_TIMEOUT_S = 5.0
_THREAD_NAME = "ringrt-data-prefetch"


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
