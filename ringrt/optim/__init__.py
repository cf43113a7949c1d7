"""Optimizers with torch.optim's update rules, over dicts of NumPy arrays updated in place.

``SGD``, ``Adam`` and ``AdamW`` work on any dict name -> ndarray, including a single flat
1-D buffer, which is how the ZeRO-1 optimizer drives them on its shard.
"""

from ringrt.optim._base import Optimizer
from ringrt.optim.adam import Adam, AdamW
from ringrt.optim.sgd import SGD
from ringrt.optim.zero import ZeroRedundancyOptimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "ZeroRedundancyOptimizer"]
