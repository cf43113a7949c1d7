"""``dist.monitored_barrier`` on "ringrt" groups, with gloo's semantics.

torch's ``monitored_barrier`` refuses every backend but gloo before it reaches the backend
("monitored_barrier is only implemented for GLOO backend"), so, as ``_rendezvous`` does for
``env://``, ``install()`` swaps the function in ``torch.distributed`` for one that runs
:func:`monitored_barrier` on ringrt groups and torch's own on any other group.

As in gloo, the group's first rank waits up to ``timeout`` for a token from every other
member, then releases them; a member missing by then is named in a ``RuntimeError`` on the
first rank (the first one missing, or every one with ``wait_all_ranks=True``), and a member
not released in time raises naming the first rank. The tokens are point-to-point messages on
a tag no torch op uses, outside the collectives' sequence.
"""

from __future__ import annotations

import time

import numpy as np
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

from ringrt import p2p
from ringrt._deadline import seconds
from ringrt.errors import TimeoutError as RingrtTimeoutError

# point-to-point tags are [0, 2**62); torch's send/recv tags are small
MONITORED_BARRIER_TAG = 2**62 - 11


def monitored_barrier(pg, timeout, wait_all_ranks: bool = False) -> None:
    """Run gloo's monitored barrier over ``pg`` (a ``ProcessGroupRingrt``).

    Raises:
        RuntimeError: on the first rank, when members did not arrive within ``timeout``
            (their global ranks and the timeout in ms in the message, as gloo says it); on
            the others, when the first rank did not release them in time.
    """
    group, members = pg.ringrt_group, pg._members
    limit = seconds(timeout)
    token = np.zeros(1, np.uint8)
    if group.rank != 0:
        p2p.isend(token, members[0], MONITORED_BARRIER_TAG, group=group)
        released = p2p.irecv(np.empty(1, np.uint8), members[0], MONITORED_BARRIER_TAG,
                             group=group)
        if not _arrived(released, time.monotonic() + limit):
            raise RuntimeError(f"[Rank {pg._global_rank}]: Rank {members[0]} did not release "
                               f"monitoredBarrier within {_ms(limit)} ms; it may have found "
                               f"another rank missing (see its error) or be stuck itself")
        return
    deadline = time.monotonic() + limit
    arrivals = [p2p.irecv(np.empty(1, np.uint8), None, MONITORED_BARRIER_TAG, group=group)
                for _ in members[1:]]
    arrived = set()
    for work in arrivals:
        if not _arrived(work, deadline):
            break
        arrived.add(work.result())
    missing = [r for r in members[1:] if r not in arrived]
    if missing:
        named = missing if wait_all_ranks else missing[:1]
        who = f"Ranks {', '.join(map(str, named))}" if wait_all_ranks else f"Rank {named[0]}"
        raise RuntimeError(f"[Rank {pg._global_rank}]: {who} failed to pass monitoredBarrier in "
                           f"{_ms(limit)} ms; check what kept them (their logs, a hang "
                           f"before this barrier)")
    for rank in members[1:]:
        p2p.isend(token, rank, MONITORED_BARRIER_TAG, group=group)


def _arrived(work, deadline: float) -> bool:
    try:
        work.wait(max(0.0, deadline - time.monotonic()))
    except RingrtTimeoutError:
        return False
    return True


def _ms(limit: float) -> int:
    return int(round(limit * 1000))


def install() -> None:
    """Route ``dist.monitored_barrier`` on ringrt groups here (idempotent)."""
    torch_monitored = c10d.monitored_barrier
    if getattr(torch_monitored, "ringrt_wraps", None) is not None:
        return

    def routed(group=None, timeout=None, wait_all_ranks=False):
        pg = c10d._get_default_group() if group is None else group
        if c10d._rank_not_in_group(group) or not hasattr(pg, "ringrt_group"):
            return torch_monitored(group, timeout, wait_all_ranks)
        if timeout is None:
            timeout = c10d._get_default_timeout(c10d.get_backend(group))
        return monitored_barrier(pg, timeout, wait_all_ranks)

    routed.__doc__ = torch_monitored.__doc__
    routed.ringrt_wraps = torch_monitored
    c10d.monitored_barrier = dist.monitored_barrier = routed
