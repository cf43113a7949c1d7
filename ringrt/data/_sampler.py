"""``DistributedSampler``: each rank's equal, disjoint slice of every epoch (torch's formula).

Public through :mod:`ringrt.data`; its docstring has the mid-epoch resume recipe.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np


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


@dataclasses.dataclass(slots=True)
class _Position:
    """Where this rank is in the current epoch: counts of its indices in the current layout,
    except ``offset``.

    One object for the sampler's life, changed in place (not frozen): an iterator advances it
    once per index, and an iterator started before a reset keeps advancing the same object,
    as it did the sampler's fields.
    """

    offset: int = 0     # epoch samples consumed before this layout began (elastic resume)
    resume_at: int = 0  # indices to skip at the next iteration (set by a resume)
    start: int = 0      # where the current iteration started in the epoch
    yielded: int = 0    # reached by our own iterator (may run ahead of a consumer)
    reported: int | None = None  # as reported by a consumer (record_consumed)

    def reset(self, offset: int = 0, consumed: int = 0) -> None:
        """Back to the start of the layout beginning at ``offset``, or, with ``consumed``,
        resuming after that many of its indices."""
        self.offset = offset
        self.resume_at = self.start = self.yielded = consumed
        self.reported = None

    def begin_iteration(self) -> int:
        """A new iteration starts: the index of the layout it starts at."""
        start, self.resume_at = self.resume_at, 0
        self.start = self.yielded = start
        self.reported = None
        return start

    def advance(self) -> None:
        """Our iterator handed out one more index."""
        self.yielded += 1

    def report(self, count: int) -> None:
        """A consumer took ``count`` more indices (from then on, reports alone count)."""
        self.reported = (self.start if self.reported is None else self.reported) + count

    @property
    def consumed(self) -> int:
        """Indices of the layout consumed: reported, else handed out by our iterator."""
        return self.yielded if self.reported is None else self.reported


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

    Elastic resume: a state saved at world size ``R`` and loaded into a sampler of another
    world size ``R'`` continues the same epoch without repeating or skipping a sample. The
    ``g`` samples of the epoch's order that all ranks consumed together (``global_consumed``
    in the state) stay consumed; the rest, ``order[g:]``, is split as above over the ``R'``
    ranks (padded or truncated to a multiple of ``R'``), so rank ``r`` takes
    ``resize(order[g:], m * R')[r::R']`` for the remainder of the epoch; the next epoch is
    torch's layout again. With ``n - g`` a multiple of ``R'`` (e.g. a global batch that every
    world size divides and a dataset that the global batch divides), every sample of the epoch
    is seen exactly once.

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
        self._position = _Position()

    def __len__(self) -> int:
        """Indices per epoch on this rank (the full epoch, also when resuming mid-epoch; after
        an elastic resume at another world size, the rest of the epoch split anew)."""
        return self._layout_samples()

    def _layout_samples(self) -> int:
        """This rank's indices in the current layout (the whole epoch unless re-sharded)."""
        offset = self._position.offset
        if not offset:
            return self.num_samples
        return _num_samples(self.dataset_length - offset, self.num_replicas,
                            self.drop_last)

    def __iter__(self) -> Iterator[int]:
        """Return an iterator over this rank's indices (Python ints) for the current epoch.

        After :meth:`load_state_dict` the first iteration starts where the saved one stopped.
        """
        start = self._position.begin_iteration()
        return self._count_yielded(self.indices()[start:].tolist())

    def _count_yielded(self, indices: list[int]) -> Iterator[int]:
        """Yield ``indices``, advancing our own position as each one is handed out."""
        position = self._position
        for index in indices:
            position.advance()
            yield index

    def indices(self) -> np.ndarray:
        """Return this rank's full index array for the current epoch (no resume offset)."""
        n = self.dataset_length
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n)
        else:
            order = np.arange(n)
        order = order[self._position.offset:]        # after an elastic resume: the rest
        total = self._layout_samples() * self.num_replicas
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
            self._position.reset()
        self.epoch = epoch

    def record_consumed(self, count: int) -> None:
        """Tell the sampler that ``count`` more of its indices reached the training loop.

        A consumer that reads ahead (the prefetching :class:`DataLoader`) calls this as it
        hands out each batch, so :meth:`state_dict` counts what was consumed rather than what
        was prefetched. Once called during an iteration, only reported counts are used.

        Args:
            count: number of indices just consumed (>= 0).
        """
        self._position.report(_check_int("record_consumed", "count", count, 0))

    def state_dict(self) -> dict[str, Any]:
        """Return the sampler's position: epoch, seed and samples of this epoch consumed.

        Returns:
            A dict of plain ints/bools, e.g. ``{"epoch": 3, "seed": 0, "consumed": 40,
            "global_consumed": 160, "offset": 0, "num_replicas": 4, "dataset_length": 1000,
            "shuffle": True, "drop_last": False}``: ``consumed`` counts this rank's indices
            in the current layout, ``global_consumed`` the samples of the epoch's order that
            every rank together consumed (what a resume at another world size starts after),
            ``offset`` where the current layout began (0 unless resumed elastically).
        """
        consumed, offset = self._position.consumed, self._position.offset
        return {
            "epoch": self.epoch,
            "seed": self.seed,
            "consumed": consumed,
            "global_consumed": _epoch_position(self.dataset_length, offset, consumed,
                                               self.num_replicas),
            "offset": offset,
            "num_replicas": self.num_replicas,
            "dataset_length": self.dataset_length,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict`; the next iteration resumes there.

        A state saved mid-epoch at another world size (``num_replicas``) re-shards the rest of
        the epoch over this sampler's ranks (see the class docstring): nothing is repeated or
        skipped.

        Args:
            state: a dict from :meth:`state_dict` (of any rank: all ranks advance together).

        Raises:
            KeyError: ``state`` lacks an entry.
            ValueError: it was saved mid-epoch for a different dataset length, shuffle or
                drop_last setting, where the positions would not line up.
        """
        owner = "DistributedSampler.load_state_dict"
        missing = [key for key in ("epoch", "seed", "consumed") if key not in state]
        if missing:
            raise KeyError(f"{owner}: state lacks {missing}; pass what state_dict() returned")
        consumed = _check_int(owner, "consumed", state["consumed"], 0)
        offset = _check_int(owner, "offset", state.get("offset", 0), 0) if consumed else 0
        if consumed:
            self._check_same_layout(owner, state)
        resharded = consumed and state.get("num_replicas", self.num_replicas) != self.num_replicas
        if resharded:
            offset, consumed = self._global_consumed(owner, state, offset, consumed), 0
        self._position.offset = offset
        if consumed > self._layout_samples():
            raise ValueError(
                f"{owner}: consumed={consumed} exceeds the {self._layout_samples()} samples per "
                "epoch"
            )
        self.epoch = _check_int(owner, "epoch", state["epoch"], 0)
        self.seed = _check_int(owner, "seed", state["seed"], 0)
        self._position.reset(offset, consumed)

    def _global_consumed(self, owner: str, state: Mapping[str, Any], offset: int,
                         consumed: int) -> int:
        """Samples of the epoch's order consumed by all ranks of the saved world together."""
        saved_replicas = _check_int(owner, "num_replicas", state["num_replicas"], 1)
        if offset > self.dataset_length:
            raise ValueError(f"{owner}: offset={offset} exceeds the dataset length "
                             f"{self.dataset_length}")
        total = _epoch_position(self.dataset_length, offset, consumed, saved_replicas)
        if "global_consumed" in state and state["global_consumed"] != total:
            raise ValueError(f"{owner}: global_consumed={state['global_consumed']!r} does not "
                             f"match consumed={consumed} x num_replicas={saved_replicas} + "
                             f"offset={offset}; pass an unmodified state_dict()")
        return total

    def _check_same_layout(self, owner: str, state: Mapping[str, Any]) -> None:
        """Raise ValueError if ``state`` splits the epoch differently from this sampler."""
        for key in ("dataset_length", "shuffle", "drop_last"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(
                    f"{owner}: the state was saved mid-epoch with {key}={state[key]!r} but this "
                    f"sampler has {key}={getattr(self, key)!r}, so the remaining indices cannot "
                    "be recovered; resume with the same setting, or restart the epoch by "
                    "setting state['consumed'] = 0"
                )


def _epoch_position(n: int, offset: int, consumed: int, replicas: int) -> int:
    """Samples of the epoch's order behind every rank: the layout's start ``offset`` plus
    ``consumed`` per rank over ``replicas`` ranks (padding repeats are not counted)."""
    return offset + min(consumed * replicas, n - offset)


def _num_samples(n: int, replicas: int, drop_last: bool) -> int:
    """torch's per-rank sample count, in integer arithmetic (ceil(a / b) == -(-a // b))."""
    if drop_last and n % replicas != 0:
        return -(-(n - replicas) // replicas)
    return -(-n // replicas)
