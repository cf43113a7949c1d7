"""Where a group's ranks live: its ranks grouped by host (a pure value, see :class:`Layout`).

Here, below the process group, so that a group computes and caches its own layout
(``ProcessGroup.layout``); the algorithms that use it (``_algorithms/hierarchical.py``) read it
from the group.
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
