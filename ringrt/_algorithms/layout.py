"""Where a group's ranks live: which host each is on, and views of an op over some of them.

:class:`Layout` groups a group's ranks by host (hosts ordered by their lowest group rank,
ranks of a host in group-rank order); a rank's *local index* is its position on its host. It
lives in ``_comm/host_layout.py``, below the process group, which caches its own.
:class:`SubExchange` presents an op's :class:`~ringrt._comm.exchange.Exchange` restricted to
a subset of the group's ranks (one host's ranks, or one rank per host), renumbered 0..k-1, so
the flat socket algorithms (ring, tree, direct) run unchanged on either level.
"""

from __future__ import annotations

from ringrt._comm.host_layout import Layout

__all__ = ["Layout", "SubExchange"]      # Layout lives with the group (it caches its own)


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
