"""Shared memory among the ranks of one host when the job spans several hosts.

The *world arena* (a ``shm.ShmArena`` over every rank, see ``rendezvous.share_memory``) exists
only when the whole job runs on one host. A multi-host job gets, on each host with two or more
ranks, a *host arena* over that host's ranks alone: a ``ShmArena`` indexed by *local index*
(the rank's position among its host's ranks, in rank order) instead of by rank. The two-level
collectives (``ringrt._algorithms.hierarchical``) run their inside-the-host steps on it.

Each host decides on its own (its ranks agree through the store): a host where /dev/shm is
missing or full takes ipc sockets for its local steps, which no other host needs to know.
Only the world group uses it (its op sequence numbers are the tickets); a subgroup gets
arenas of its own, sized on use (``group_shm``); both agree on it through
``rendezvous.agree_on_arena``, as the world arena does through ``rendezvous.share_memory``.
"""

from __future__ import annotations

from ringrt._comm.rendezvous import agree_on_arena
from ringrt._comm.shm import ShmArena
from ringrt._deadline import Deadline
from ringrt._settings import Settings


def host_ranks(hosts: dict[int, str], rank: int) -> list[int]:
    """The ranks on ``rank``'s host, in rank order (``hosts``: rank -> host identity)."""
    return sorted(r for r, host in hosts.items() if host == hosts[rank])


def local_host_arena(hosts: dict[int, str], rank: int, store, namespace: str,
                     deadline: Deadline, token: str, settings: Settings) -> ShmArena | None:
    """This rank's arena over its host's ranks (indexed by local index), or None: one host
    only (the world arena covers it), a single rank on this host, shared memory off, or some
    rank of this host could not make or map its segment."""
    local = host_ranks(hosts, rank)
    if len(set(hosts.values())) < 2 or len(local) < 2:
        return None
    arena = ShmArena.create(local.index(rank), len(local), settings=settings)
    return agree_on_arena(arena, local, rank, store, f"{namespace}/hostshm", deadline, token)

