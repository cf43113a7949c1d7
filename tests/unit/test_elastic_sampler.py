"""DistributedSampler resumed at another world size (elastic jobs): exact index sets.

Every case simulates all ranks of each world in one process: each "step" every rank takes its
next batch; at a restart point the state of rank 0 goes through JSON (as a checkpoint would
carry it) into fresh samplers of the new world size. The union of what the ranks consumed is
compared with the epoch's order as a multiset.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from ringrt.data import ArrayDataset, DataLoader, DistributedSampler


def _run_schedule(n, schedule, global_batch, seed=3, shuffle=True, epoch=5):
    """``schedule``: [(world, steps), ...], steps None = to the end of the epoch.

    Returns the indices consumed, in order, across every world of the schedule."""
    consumed, state = [], None
    for world, steps in schedule:
        samplers = [DistributedSampler(n, world, rank, shuffle=shuffle, seed=seed)
                    for rank in range(world)]
        for sampler in samplers:
            if state is not None:
                sampler.load_state_dict(state)
            sampler.set_epoch(epoch)
        iterators = [iter(s) for s in samplers]
        per_rank = global_batch // world
        step = 0
        while steps is None or step < steps:
            batches = [[i for i in (next(it, None) for _ in range(per_rank)) if i is not None]
                       for it in iterators]
            if not any(batches):
                break
            assert len({len(b) for b in batches}) == 1, "ranks got batches of different sizes"
            consumed.extend(i for batch in batches for i in batch)
            step += 1
        state = json.loads(json.dumps(samplers[0].state_dict()))
    return consumed


@pytest.mark.parametrize("schedule", [
    [(4, 3), (3, 2), (4, None)],          # lose a node, get it back
    [(2, 1), (4, 4), (3, 1), (2, None)],
    [(3, 0), (4, None)],                  # restart before the first step
    [(4, 10), (3, None)],                 # restart exactly at the epoch's end
])
def test_every_sample_exactly_once_across_world_sizes(schedule):
    n, global_batch = 120, 12
    consumed = _run_schedule(n, schedule, global_batch)
    assert Counter(consumed) == Counter(range(n))


def test_resharded_order_continues_the_epochs_permutation():
    n = 48
    consumed = _run_schedule(n, [(4, 2), (3, None)], 12, seed=7, epoch=1)
    order = np.random.default_rng(7 + 1).permutation(n)
    assert sorted(consumed[:24]) == sorted(order[:24].tolist())   # the prefix stays consumed
    assert sorted(consumed[24:]) == sorted(order[24:].tolist())


def test_reshard_state_reports_global_position():
    sampler = DistributedSampler(100, 4, 1, shuffle=False)
    iterator = iter(sampler)
    for _ in range(5):
        next(iterator)
    state = sampler.state_dict()
    assert (state["consumed"], state["global_consumed"], state["offset"]) == (5, 20, 0)

    resumed = DistributedSampler(100, 3, 2, shuffle=False)
    resumed.load_state_dict(state)
    # order[20:] padded to 81 with order[20]; rank 2 takes every third: 22, 25, ..., 97, 20
    assert list(resumed) == [*range(22, 100, 3), 20]
    assert len(resumed) == 27                              # padded to 81: ceil(80 / 3)
    assert resumed.state_dict()["global_consumed"] == 100  # padding is not double-counted


def test_uneven_remainder_pads_but_skips_nothing():
    consumed = _run_schedule(50, [(4, 2), (3, None)], 12, shuffle=True)
    counts = Counter(consumed)
    assert set(counts) == set(range(50))
    assert sum(counts.values()) - 50 == (-(50 - 24)) % 3  # only the padding repeats


def test_next_epoch_after_reshard_is_torch_layout_again():
    sampler = DistributedSampler(40, 4, 0)
    iterator = iter(sampler)
    next(iterator)
    resumed = DistributedSampler(40, 2, 1)
    resumed.load_state_dict(sampler.state_dict())
    resumed.set_epoch(1)
    fresh = DistributedSampler(40, 2, 1)
    fresh.set_epoch(1)
    assert list(resumed) == list(fresh)


def test_loader_resumes_at_another_world_size_exactly_once():
    n, global_batch = 96, 24
    dataset = ArrayDataset(np.arange(n), np.arange(n))
    seen, state = [], None
    for world, steps in [(4, 1), (3, 2), (2, None)]:
        loaders = []
        for rank in range(world):
            sampler = DistributedSampler(dataset, world, rank, seed=1)
            loader = DataLoader(dataset, batch_size=global_batch // world, sampler=sampler,
                                drop_last=True, prefetch=0)
            if state is not None:
                loader.load_state_dict(state)
            loaders.append(loader)
        iterators = [iter(loader) for loader in loaders]
        for step in range(steps if steps is not None else n):
            batches = [next(it, None) for it in iterators]
            if batches[0] is None:
                break
            seen.extend(int(v) for x, _ in batches for v in x)
        state = json.loads(json.dumps(loaders[0].state_dict()))
        for it in iterators:
            it.close()
    assert Counter(seen) == Counter(range(n))


@pytest.mark.parametrize("change, error, match", [
    ({"dataset_length": 21}, ValueError, "dataset_length=21"),
    ({"global_consumed": 3}, ValueError, "global_consumed=3 does not match"),
    ({"offset": 30}, ValueError, "offset=30 exceeds"),
    ({"offset": -1}, ValueError, "offset"),
])
def test_reshard_rejects_inconsistent_state(change, error, match):
    state = DistributedSampler(20, 2, 0).state_dict()
    state.update(consumed=4, global_consumed=8)
    state.update(change)
    with pytest.raises(error, match=match):
        DistributedSampler(20, 4, 0).load_state_dict(state)
