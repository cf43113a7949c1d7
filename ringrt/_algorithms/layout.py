"""Where a group's ranks live: which host each is on, and views of an op over some of them.

:class:`Layout` groups a group's ranks by host (hosts ordered by their lowest group rank,
ranks of a host in group-rank order); a rank's *local index* is its position on its host.
:class:`SubExchange` presents an op's :class:`~ringrt._comm.exchange.Exchange` restricted to
a subset of the group's ranks (one host's ranks, or one rank per host), renumbered 0..k-1, so
the flat socket algorithms (ring, tree, direct) run unchanged on either level.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    """A group's ranks by host: ``hosts[h]`` lists host h's group ranks."""

    hosts: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, host_of_rank: list[str]) -> Layout:
        """From each group rank's host identity (``host_of_rank[g]``)."""
        order: dict[str, list[int]] = {}
        for rank, host in enumerate(host_of_rank):
            order.setdefault(host, []).append(rank)
        return cls(tuple(tuple(ranks) for ranks in order.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(ranks) for ranks in self.hosts)

    @property
    def even(self) -> bool:
        """Every host has as many ranks."""
        return len(set(self.sizes)) == 1

    @property
    def two_level(self) -> bool:
        """Two levels can help: several hosts, and some host with several ranks."""
        return len(self.hosts) > 1 and max(self.sizes) > 1

    def host_of(self, rank: int) -> int:
        return next(h for h, ranks in enumerate(self.hosts) if rank in ranks)

    def local_ranks(self, rank: int) -> tuple[int, ...]:
        """The ranks on ``rank``'s host."""
        return self.hosts[self.host_of(rank)]

    def leaders(self, root: int | None = None) -> list[int]:
        """One rank per host: the first, except ``root`` on its own host."""
        root_host = None if root is None else self.host_of(root)
        return [root if h == root_host else ranks[0] for h, ranks in enumerate(self.hosts)]

    def same_index(self, rank: int) -> list[int]:
        """The rank with ``rank``'s local index on every host that has one."""
        index = self.local_ranks(rank).index(rank)
        return [ranks[index] for ranks in self.hosts if index < len(ranks)]


class SubExchange:
    """An exchange over ``ranks`` (group ranks, this rank among them), renumbered 0..k-1.

    Messages go through the parent exchange, so they belong to the same op (same sequence
    number, signature checks, deadline and failure detection); messages between a pair keep
    their order, so several sub-steps between the same two ranks in one op stay matched.
    """

    def __init__(self, parent, ranks: list[int]):
        self.parent = parent
        self.ranks = list(ranks)
        self.rank = self.ranks.index(parent.rank)
        self.size = len(self.ranks)

    def send(self, peer: int, data, snapshot: bool = False) -> None:
        self.parent.send(self.ranks[peer], data, snapshot)

    def recv(self, peer: int):
        return self.parent.recv(self.ranks[peer])

    def as_array(self, buffer, dtype, count: int, peer: int):
        return self.parent.as_array(buffer, dtype, count, self.ranks[peer])
