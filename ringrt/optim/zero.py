"""ZeRO-1: shard the optimizer state over the ranks (Megatron's distributed-optimizer layout).

The parameters are laid out in one flat buffer, padded with zeros to a multiple of the world
size and split evenly: rank r owns elements ``[r*S, (r+1)*S)``. Each step::

    local grads --flatten--> reduce_scatter_tensor(AVG) --> this rank's averaged grad shard
    inner optimizer steps the shard (its state exists for S elements only)
    all_gather_into_tensor --> every rank has all updated parameters --> caller's arrays

so each rank holds ``1/world`` of the optimizer state, and the update equals the unsharded
optimizer applied to the averaged gradients (the inner optimizer is elementwise).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

import ringrt as dist
from ringrt._flat import FlatLayout, check_float_params
from ringrt._process_group import ProcessGroup
from ringrt._observe import timeline
from ringrt.optim.adam import Adam

__all__ = ["ZeroRedundancyOptimizer"]

SHARD = "shard"          # the inner optimizer sees one parameter of this name: the flat shard


class ZeroRedundancyOptimizer:
    """Wrap an elementwise optimizer so each rank keeps state for its shard only.

    Args:
        params: name -> floating ndarray (one dtype), replicated on every rank. They are
            updated IN PLACE by :meth:`step` (like any ringrt optimizer) and remain the source
            of truth: changing them between steps (e.g. loading a checkpoint) is honoured.
        optimizer_class: an elementwise optimizer class (SGD, Adam, AdamW); default Adam.
        group: process group (default: the global group).
        **defaults: hyper-parameters for ``optimizer_class`` (lr, betas, momentum, ...).

    Attributes:
        params: the caller's dict. layout: the flat layout (padded to a multiple of world).
        shard: ``(start, stop)`` of this rank's elements. optim: the inner optimizer.

    Raises:
        TypeError: params are not floating ndarrays of one dtype. ValueError: empty params.
    """

    def __init__(self, params: Mapping[str, np.ndarray], optimizer_class: type = Adam,
                 group: ProcessGroup | None = None, **defaults: float):
        check_float_params(params, "ZeroRedundancyOptimizer")
        self.params = params
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.layout = FlatLayout.of(params, pad_to=self.world_size)
        self.shard = self.layout.shard_range(self.rank, self.world_size)
        self._flat_params = self.layout.empty()      # all-gather output
        self._flat_grads = self.layout.empty()       # reduce-scatter input
        start, stop = self.shard
        # this rank's block of the all-gather output, also its input (every algorithm accepts
        # an input that is the output's own block) and the inner optimizer's parameter
        self._shard_params = self._flat_params[start:stop]
        self._shard_grads = np.empty_like(self._shard_params)
        self.layout.copy_range_from(params, self._shard_params, start, stop)
        self.optim = optimizer_class({SHARD: self._shard_params}, **defaults)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Average ``grads`` over ranks, update this rank's shard, all-gather the parameters.

        Args:
            grads: this rank's local (un-reduced) gradients, one per parameter name.

        Raises:
            KeyError: grads' names differ from the parameters'. ValueError: a shape differs.
        """
        with timeline.span("ZeroRedundancyOptimizer.step", "optimizer"):
            self.layout.flatten(grads, out=self._flat_grads, what="grads")
            dist.reduce_scatter_tensor(self._shard_grads, self._flat_grads,
                                       op=dist.ReduceOp.AVG, group=self.group)
            start, stop = self.shard
            self.layout.copy_range_from(self.params, self._shard_params, start, stop)
            self.optim.step({SHARD: self._shard_grads})
            dist.all_gather_into_tensor(self._flat_params, self._shard_params, group=self.group)
            self.layout.unflatten_into(self._flat_params, self.params)

    @property
    def lr(self) -> float:
        """The inner optimizer's learning rate (settable, for schedules)."""
        return self.optim.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optim.lr = value

    @property
    def param_groups(self):
        """The inner optimizer's param groups (one group holding the shard)."""
        return self.optim.param_groups

    def state_bytes(self) -> int:
        """Bytes of optimizer state held by this rank: about ``1/world`` of the unsharded."""
        return self.optim.state_bytes()

    def state_dict(self) -> dict:
        """This rank's shard state plus the layout needed to re-shard it.

        Returns:
            ``{"zero": {layout, world_size, rank, shard}, "optimizer": inner.state_dict()}``;
            inner arrays of shape ``(stop - start,)`` are per-element (sharded) state.
        """
        return {"zero": self.meta(), "optimizer": self.optim.state_dict()}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Load a state dict saved by the rank owning the same shard of the same layout.

        Raises:
            ValueError: the layout or shard differs (a different world size or model);
                ``ringrt.checkpoint.load`` re-shards a checkpoint for a new world size.
        """
        saved, mine = state_dict["zero"], self.meta()
        if saved["layout"] != mine["layout"] or list(saved["shard"]) != list(mine["shard"]):
            raise ValueError(
                f"ZeroRedundancyOptimizer.load_state_dict on rank {self.rank}: state was saved "
                f"for shard {saved['shard']} of world {saved['world_size']}, this rank owns "
                f"{mine['shard']} of world {mine['world_size']} (or the parameters differ); "
                "use ringrt.checkpoint.load to re-shard"
            )
        self.optim.load_state_dict(state_dict["optimizer"])

    def meta(self) -> dict:
        """JSON-ready description of the sharding: layout, world size, rank, shard range."""
        return {"layout": self.layout.to_json(), "world_size": self.world_size,
                "rank": self.rank, "shard": list(self.shard)}
