"""``ringrt.elastic.membership_changed`` for torch jobs: an elastic ``ringrun`` job
(``--nnodes MIN:MAX``) whose workers use ``torch.distributed`` on the "ringrt" backend.

At a checkpoint every rank asks; rank 0 of the group reads the membership record from
ringrun's store (the store torch's ``env://`` rendezvous already holds under ringrun:
``_rendezvous``) and broadcasts the answer over torch, so every rank decides the same::

    save_checkpoint(...)                           # every rank has seen it complete
    if ringrt.torch.membership_changed():          # collective: every rank calls it
        sys.exit(ringrt.elastic.RESTART_EXIT_CODE) # the agents restart with the new node

With DiLoCo, call ``consolidate()`` before the checkpoint (at an outer-step boundary) so that
rank 0's copy is every replica's. Outside an elastic ``ringrun`` job it is always False.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ringrt import elastic

__all__ = ["membership_changed"]


def membership_changed(group: dist.ProcessGroup | None = None) -> bool:
    """True when the workers should stop here so that the agents restart them with new
    nodes (see :func:`ringrt.elastic.membership_changed`). Collective over ``group``
    (default: torch's default group).

    Raises:
        RuntimeError: an elastic job whose torch rendezvous did not go through ringrun's
            store (``init_process_group`` with another ``init_method`` or store).
    """
    mine = elastic.generation()
    if mine is None:
        return False
    flag = torch.zeros(1, dtype=torch.int32)
    if dist.get_rank(group) == 0:
        flag[0] = elastic.restart_wanted(_ringrun_store(), mine)
    leader = 0 if group is None else dist.get_global_rank(group, 0)
    dist.broadcast(flag, src=leader, group=group)
    return bool(flag[0])


def _ringrun_store():
    """ringrun's store, inside the stores torch wraps around the default group's."""
    store = dist.distributed_c10d._get_default_store()
    while not hasattr(store, "ringrt_store"):
        store = getattr(store, "underlying_store", None)
        if store is None:
            raise RuntimeError(
                f"ringrt.torch.membership_changed on rank {dist.get_rank()}: this elastic job's "
                "torch rendezvous did not go through ringrun's store; call "
                "dist.init_process_group('ringrt') with the default env:// init under ringrun")
    return store.ringrt_store
