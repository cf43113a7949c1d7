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

from ringrt.data._datasets import ArrayDataset, NpyDataset
from ringrt.data._loader import DataLoader
from ringrt.data._sampler import DistributedSampler

__all__ = ["DistributedSampler", "DataLoader", "ArrayDataset", "NpyDataset"]
