"""DistributedSampler, DataLoader and the datasets: pure logic, no process group."""

from __future__ import annotations

import gc
import itertools
import json
import math
import threading

import numpy as np
import pytest

import ringrt
from ringrt.data import ArrayDataset, DataLoader, DistributedSampler, NpyDataset


def torch_sampler_indices(n, replicas, rank, shuffle, seed, epoch, drop_last):
    """torch.utils.data.DistributedSampler's __init__/__iter__, transcribed plainly with lists.

    The only deliberate difference is the shuffle, which ringrt's spec defines as
    numpy.random.default_rng(seed + epoch).permutation(n) instead of torch.randperm.
    """
    if drop_last and n % replicas != 0:
        num_samples = math.ceil((n - replicas) / replicas)
    else:
        num_samples = math.ceil(n / replicas)
    total_size = num_samples * replicas
    if shuffle:
        indices = np.random.default_rng(seed + epoch).permutation(n).tolist()
    else:
        indices = list(range(n))
    if not drop_last:
        padding_size = total_size - len(indices)
        if padding_size <= len(indices):
            indices += indices[:padding_size]
        else:
            indices += (indices * math.ceil(padding_size / len(indices)))[:padding_size]
    else:
        indices = indices[:total_size]
    assert len(indices) == total_size
    indices = indices[rank:total_size:replicas]
    assert len(indices) == num_samples
    return indices


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("ringrt-data")]


@pytest.fixture(autouse=True)
def _no_prefetch_thread_left_behind():
    yield
    assert prefetch_threads() == [], "a test left a DataLoader prefetch thread running"


# --------------------------------------------------------------------------- sampler formula

SIZES = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 16, 17, 23, 100, 101]


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5])
def test_sampler_matches_torch_formula(replicas, shuffle, drop_last):
    for n, (seed, epoch) in itertools.product(SIZES, [(0, 0), (0, 3), (17, 1)]):
        per_rank = []
        for rank in range(replicas):
            sampler = DistributedSampler(
                n, replicas, rank, shuffle=shuffle, seed=seed, drop_last=drop_last
            )
            sampler.set_epoch(epoch)
            got = list(sampler)
            want = torch_sampler_indices(n, replicas, rank, shuffle, seed, epoch, drop_last)
            assert got == want, (n, replicas, rank, shuffle, seed, epoch, drop_last)
            assert all(type(i) is int for i in got)
            assert len(sampler) == len(got)
            per_rank.append(got)
        check_partition(n, replicas, per_rank, drop_last)


def check_partition(n, replicas, per_rank, drop_last):
    """Equal lengths; disjoint (apart from padding) and covering (unless drop_last)."""
    assert len({len(indices) for indices in per_rank}) == 1
    merged = [i for indices in per_rank for i in indices]
    assert all(0 <= i < n for i in merged)
    if drop_last:
        assert len(set(merged)) == len(merged) == n - n % replicas
    else:
        assert set(merged) == set(range(n))
        assert len(merged) - n == (-n) % replicas  # only the padding repeats


def test_sampler_example_from_docstring():
    got = [list(DistributedSampler(10, 3, rank, shuffle=False)) for rank in range(3)]
    assert got == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]


def test_sampler_accepts_sized_dataset():
    assert list(DistributedSampler(ArrayDataset(np.zeros(5)), 2, 1, shuffle=False)) == [1, 3, 0]
    assert list(DistributedSampler(range(4), 2, 0, shuffle=False)) == [0, 2]


def test_epoch_changes_order_and_is_reproducible():
    sampler = DistributedSampler(50, 2, 0, seed=5)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    assert second == list(DistributedSampler(50, 2, 0, seed=6))  # seeded by seed + epoch


# --------------------------------------------------------------------------- sampler errors


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_replicas=2, rank=2), ValueError, r"invalid rank 2; it must be in \[0, 1\]"),
        (dict(num_replicas=2, rank=-1), ValueError, "rank"),
        (dict(num_replicas=0, rank=0), ValueError, "num_replicas"),
        (dict(num_replicas=2.0, rank=0), TypeError, "num_replicas"),
        (dict(num_replicas=2, rank=0, seed=-1), ValueError, "seed"),
    ],
)
def test_sampler_validates_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DistributedSampler(10, **kwargs)


def test_sampler_validates_dataset():
    with pytest.raises(ValueError, match="length must be >= 0"):
        DistributedSampler(-1, 1, 0)
    with pytest.raises(TypeError, match="__len__"):
        DistributedSampler(object(), 1, 0)
    with pytest.raises(ValueError, match="epoch"):
        DistributedSampler(3, 1, 0).set_epoch(-1)


def test_sampler_without_group_says_what_to_do(monkeypatch):
    monkeypatch.setattr(ringrt, "is_initialized", lambda: False, raising=False)
    with pytest.raises(
        ValueError,
        match="pass num_replicas= and rank= or call "
        r"ringrt.init_process_group\(\)",
    ):
        DistributedSampler(10)
    with pytest.raises(ValueError, match="init_process_group"):
        DistributedSampler(10, num_replicas=2)


def test_sampler_defaults_to_process_group(monkeypatch):
    monkeypatch.setattr(ringrt, "is_initialized", lambda: True, raising=False)
    monkeypatch.setattr(ringrt, "get_world_size", lambda group=None: 4, raising=False)
    monkeypatch.setattr(ringrt, "get_rank", lambda group=None: 3, raising=False)
    sampler = DistributedSampler(10, shuffle=False)
    assert (sampler.num_replicas, sampler.rank) == (4, 3)
    assert list(sampler) == [3, 7, 1]
    assert DistributedSampler(10, rank=1).num_replicas == 4


# --------------------------------------------------------------------------- sampler state


def test_sampler_resumes_mid_epoch_when_iterated_directly():
    sampler = DistributedSampler(23, 3, 1, seed=4)
    sampler.set_epoch(2)
    full = list(sampler)
    iterator = iter(sampler)
    seen = [next(iterator) for _ in range(3)]
    state = json.loads(json.dumps(sampler.state_dict()))
    assert state["epoch"] == 2 and state["consumed"] == 3 and state["seed"] == 4

    resumed = DistributedSampler(23, 3, 1, seed=0)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the resume recipe calls set_epoch(loaded epoch): position is kept
    assert seen + list(resumed) == full
    assert list(resumed) == full  # the offset applies once; the next pass is a full epoch
    resumed.set_epoch(3)
    assert resumed.state_dict()["consumed"] == 0


def test_sampler_load_with_other_epoch_starts_that_epoch_fresh():
    sampler = DistributedSampler(20, 2, 0)
    sampler.load_state_dict({"epoch": 1, "seed": 0, "consumed": 4})
    sampler.set_epoch(2)
    assert list(sampler) == list(DistributedSampler(20, 2, 0, seed=2))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(dataset_length=21), "dataset_length=21"),
        (dict(shuffle=False), "shuffle=False"),
        (dict(consumed=11), "exceeds"),
    ],
)
def test_sampler_load_rejects_mismatched_state(change, match):
    state = DistributedSampler(20, 2, 0).state_dict()
    state.update(consumed=4)
    state.update(change)
    sampler = DistributedSampler(20, 2, 0)
    with pytest.raises(ValueError, match=match):
        sampler.load_state_dict(state)
    with pytest.raises(KeyError, match="consumed"):
        sampler.load_state_dict({"epoch": 0, "seed": 0})


# --------------------------------------------------------------------------- loader batching


class RowDataset:
    """A plain dataset with __getitem__/__len__ only: row i is (features, label)."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index == self.fail_at:
            raise KeyError(f"row {index} is corrupt")
        return np.full(3, index, dtype=np.float32), index


def as_lists(batches):
    """Turn batches (tuples of arrays) into nested lists for easy comparison."""
    return [[column.tolist() for column in batch] for batch in batches]


@pytest.mark.parametrize("prefetch", [0, 1, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_batches_rows(prefetch, drop_last):
    loader = DataLoader(RowDataset(10), batch_size=4, drop_last=drop_last, prefetch=prefetch)
    batches = list(loader)
    expected_sizes = [4, 4] if drop_last else [4, 4, 2]
    assert [len(labels) for _, labels in batches] == expected_sizes
    assert len(loader) == len(expected_sizes)
    features, labels = batches[1]
    assert features.shape == (4, 3) and features.dtype == np.float32
    assert labels.tolist() == [4, 5, 6, 7]
    np.testing.assert_array_equal(features[:, 0], labels)


def test_loader_uses_get_batch_fast_path():
    calls = []

    class Batched(ArrayDataset):
        def get_batch(self, indices):
            calls.append(list(indices))
            return super().get_batch(indices)

        def __getitem__(self, index):
            raise AssertionError("the loader should use get_batch")

    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    batches = list(DataLoader(Batched(x, y), batch_size=3))
    assert calls == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    np.testing.assert_array_equal(batches[1][0], x[3:6])
    np.testing.assert_array_equal(batches[3][1], y[9:])


def test_loader_stacks_single_arrays_scalars_and_dicts():
    class Single:
        def __len__(self):
            return 5

        def __getitem__(self, index):
            return np.array([index, -index])

    class Dicts(Single):
        def __getitem__(self, index):
            return {"x": np.ones(2) * index, "y": index}

    (first, *_) = DataLoader(Single(), batch_size=2)
    np.testing.assert_array_equal(first, [[0, 0], [1, -1]])
    scalars = list(DataLoader(list(range(5)), batch_size=2))
    assert [batch.tolist() for batch in scalars] == [[0, 1], [2, 3], [4]]
    (first, *_) = DataLoader(Dicts(), batch_size=3)
    assert first["y"].tolist() == [0, 1, 2] and first["x"].shape == (3, 2)


def test_loader_with_distributed_sampler():
    x = np.arange(11)
    data = ArrayDataset(x)
    for rank in range(3):
        sampler = DistributedSampler(data, 3, rank, seed=9)
        sampler.set_epoch(1)
        got = [i for (batch,) in DataLoader(data, batch_size=2, sampler=sampler) for i in batch]
        assert got == torch_sampler_indices(11, 3, rank, True, 9, 1, False)


def test_loader_shuffle_without_sampler_reshuffles_each_pass():
    loader = DataLoader(ArrayDataset(np.arange(30)), batch_size=7, shuffle=True)
    first = [i for (batch,) in loader for i in batch]
    second = [i for (batch,) in loader for i in batch]
    assert sorted(first) == sorted(second) == list(range(30))
    assert first != second and first != list(range(30))
    again = DataLoader(ArrayDataset(np.arange(30)), batch_size=7, shuffle=True)
    assert [i for (batch,) in again for i in batch] == first  # reproducible


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(prefetch=-1), ValueError, "prefetch"),
        (dict(sampler=[0, 1], shuffle=True), ValueError, "mutually exclusive"),
    ],
)
def test_loader_validates_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DataLoader(RowDataset(4), **kwargs)


def test_loader_rejects_unindexable_dataset():
    with pytest.raises(TypeError, match="ArrayDataset"):
        DataLoader(42)


# --------------------------------------------------------------------------- loader threads


@pytest.mark.parametrize("prefetch", [0, 2])
def test_loader_reraises_dataset_errors(prefetch):
    loader = DataLoader(RowDataset(20, fail_at=9), batch_size=4, prefetch=prefetch)
    received = []
    with pytest.raises(KeyError, match="row 9 is corrupt"):
        for _, labels in loader:
            received.append(labels.tolist())
    assert received == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert prefetch_threads() == []


def test_early_break_stops_the_thread():
    loader = DataLoader(RowDataset(1000), batch_size=2, prefetch=2)
    for step, _ in enumerate(loader):
        assert len(prefetch_threads()) == 1
        if step == 3:
            break
    assert prefetch_threads() == []


def test_dropping_loader_and_iterator_stops_the_thread():
    loader = DataLoader(RowDataset(1000), batch_size=2, prefetch=4)
    iterator = iter(loader)
    next(iterator)
    assert len(prefetch_threads()) == 1
    del loader, iterator
    gc.collect()
    assert prefetch_threads() == []


def test_unstarted_iterator_starts_no_thread():
    iterator = iter(DataLoader(RowDataset(10), batch_size=2))
    assert prefetch_threads() == []
    iterator.close()


class SignallingDataset(RowDataset):
    """Counts the rows fetched and sets ``reached`` once ``target`` rows have been fetched."""

    def __init__(self, n, target):
        super().__init__(n)
        self.fetched, self.target, self.reached = [], target, threading.Event()

    def __getitem__(self, index):
        self.fetched.append(index)
        if len(self.fetched) >= self.target:
            self.reached.set()
        return super().__getitem__(index)


def test_slow_consumer_keeps_prefetch_bounded():
    # one consumed + two queued + one in the thread's hand, blocked on the full queue
    data = SignallingDataset(100, target=4)
    iterator = iter(DataLoader(data, batch_size=1, prefetch=2))
    next(iterator)
    assert data.reached.wait(timeout=10), "the thread never read ahead"
    threading.Event().wait(0.2)  # not synchronisation: room for an overrun to show itself
    assert len(data.fetched) == 4
    iterator.close()


# --------------------------------------------------------------------------- loader resume


def epoch_batches(make_loader, epoch):
    loader, sampler = make_loader()
    sampler.set_epoch(epoch)
    return [batch.tolist() for (batch,) in loader]


@pytest.mark.parametrize("prefetch", [0, 1, 3])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("stop_after", [0, 1, 3, 5])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(prefetch, drop_last, stop_after):
    data = ArrayDataset(np.arange(47))

    def make_loader(rank=1):
        sampler = DistributedSampler(data, 3, rank, seed=11)
        return DataLoader(
            data, batch_size=3, sampler=sampler, drop_last=drop_last, prefetch=prefetch
        ), sampler

    full = epoch_batches(make_loader, epoch=2)
    loader, sampler = make_loader()
    sampler.set_epoch(2)
    seen = []
    for (batch,) in loader if stop_after else ():
        seen.append(batch.tolist())
        if len(seen) == stop_after:
            break
    saved = json.loads(json.dumps(loader.state_dict()))  # plain types only
    assert saved["batches_consumed"] == min(stop_after, len(full))
    assert saved["sampler"]["consumed"] == 3 * min(stop_after, len(full))
    assert saved["sampler"]["epoch"] == 2

    resumed, resumed_sampler = make_loader()
    resumed.load_state_dict(saved)
    assert resumed_sampler.epoch == 2
    resumed_sampler.set_epoch(resumed_sampler.epoch)
    rest = [batch.tolist() for (batch,) in resumed]
    assert seen + rest == full
    assert resumed.state_dict()["batches_consumed"] == len(full)
    resumed_sampler.set_epoch(3)
    assert [batch.tolist() for (batch,) in resumed] == epoch_batches(make_loader, epoch=3)


def test_resume_recipe_over_epochs_sees_every_sample_once_per_epoch():
    data = ArrayDataset(np.arange(40))

    def make():
        sampler = DistributedSampler(data, 2, 0, seed=3)
        return sampler, DataLoader(data, batch_size=4, sampler=sampler, prefetch=2)

    def train(epochs, checkpoint, stop_at_step):
        sampler, loader = make()
        start_epoch = 0
        if checkpoint is not None:
            loader.load_state_dict(checkpoint)
            start_epoch = sampler.epoch
        seen, step = {}, 0
        for epoch in range(start_epoch, epochs):
            sampler.set_epoch(epoch)
            for (batch,) in loader:
                seen.setdefault(epoch, []).extend(batch.tolist())
                step += 1
                if step == stop_at_step:
                    return seen, loader.state_dict()
        return seen, None

    reference, _ = train(3, None, None)
    first, checkpoint = train(3, None, stop_at_step=7)  # 5 batches per epoch: stops mid epoch 1
    second, _ = train(3, checkpoint, None)
    combined = {epoch: first.get(epoch, []) + second.get(epoch, []) for epoch in range(3)}
    assert combined == reference


def test_resume_without_sampler_and_with_a_plain_sampler():
    data = ArrayDataset(np.arange(20))
    for make in (
        lambda: DataLoader(data, batch_size=3, shuffle=True, seed=5),
        lambda: DataLoader(data, batch_size=3, sampler=list(range(19, -1, -1))),
    ):
        full = [batch.tolist() for (batch,) in make()]
        loader = make()
        iterator = iter(loader)
        seen = [next(iterator)[0].tolist() for _ in range(2)]
        saved = json.loads(json.dumps(loader.state_dict()))
        iterator.close()
        resumed = make()
        resumed.load_state_dict(saved)
        assert seen + [batch.tolist() for (batch,) in resumed] == full


def test_loader_state_ignores_prefetched_batches():
    data = SignallingDataset(100, target=2 * (1 + 4 + 1))
    sampler = DistributedSampler(data, 1, 0, shuffle=False)
    loader = DataLoader(data, batch_size=2, sampler=sampler, prefetch=4)
    iterator = iter(loader)
    next(iterator)
    assert data.reached.wait(timeout=10), "the thread never read ahead"
    assert sampler.state_dict()["consumed"] == 2
    assert loader.state_dict() == {"batches_consumed": 1, "sampler": sampler.state_dict()}
    iterator.close()


# --------------------------------------------------------------------------- datasets


def test_array_dataset():
    x, y = np.arange(12).reshape(6, 2), np.arange(6) * 10
    data = ArrayDataset(x, y)
    assert len(data) == 6
    row_x, row_y = data[4]
    assert row_x.tolist() == [8, 9] and row_y == 40
    bx, by = data.get_batch([5, 0, 3])
    assert bx.tolist() == [[10, 11], [0, 1], [6, 7]] and by.tolist() == [50, 0, 30]
    bx[0, 0] = -1
    assert x[5, 0] == 10  # a batch is a copy


@pytest.mark.parametrize(
    "arrays, match",
    [
        ((), "at least one"),
        ((np.zeros(3), np.zeros(4)), "array 0: 3, array 1: 4"),
        ((np.float64(1.0),), "0-d"),
    ],
)
def test_array_dataset_validates(arrays, match):
    with pytest.raises(ValueError, match=match):
        ArrayDataset(*arrays)


def test_npy_dataset(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    data = NpyDataset(tmp_path / "x.npy", str(tmp_path / "y.npy"))
    assert len(data) == 50
    assert all(isinstance(array, np.memmap) for array in data.arrays)
    row_x, row_y = data[7]
    np.testing.assert_array_equal(row_x, x[7])
    assert row_y == y[7]
    indices = [42, 3, 17, 3, 0, 49]
    bx, by = data.get_batch(indices)
    assert type(bx) is np.ndarray and bx.flags.writeable and bx.flags.owndata
    np.testing.assert_array_equal(bx, x[indices])
    np.testing.assert_array_equal(by, y[indices])
    sampler = DistributedSampler(data, 2, 1, seed=1)
    got = np.concatenate([bx for bx, _ in DataLoader(data, batch_size=8, sampler=sampler)])
    np.testing.assert_array_equal(got, x[list(sampler)])


def test_npy_dataset_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((3, 2)))
    np.save(tmp_path / "b.npy", np.zeros(4))
    np.savez(tmp_path / "c.npz", a=np.zeros(3))
    np.save(tmp_path / "o.npy", np.array([{}, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="same number of rows"):
        NpyDataset(tmp_path / "a.npy", tmp_path / "b.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        NpyDataset(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="npz archive"):
        NpyDataset(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="cannot memory-map"):
        NpyDataset(tmp_path / "o.npy")
    with pytest.raises(ValueError, match="at least one"):
        NpyDataset()
