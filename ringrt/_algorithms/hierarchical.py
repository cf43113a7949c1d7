"""Two-level collectives for groups that span hosts: inside each host, between hosts, back.

Ranks on one host reach each other through memory; hosts reach each other over slow links
(gigabit Ethernet or wifi: a step costs far more). A flat ring over all n ranks takes 2(n-1)
latency steps; these algorithms take the few cross-host steps of a group of one rank per host
and do the rest inside the hosts:

- all_reduce, ``leaders`` (the default): reduce to a host leader, leaders all-reduce (ring,
  recursive doubling, or with few hosts direct: one step), broadcast from the leader.
  ``shares`` (``RINGRT_TWO_LEVEL=shares``, every host with as many ranks, L; see
  ``choice.all_reduce_variant``): reduce-scatter inside the host (local index i ends with
  share i of the array reduced over its host), all-reduce of share i across hosts among the
  ranks with local index i (L groups at once, so every local rank drives a share of the
  link), all-gather inside the host. ``direct`` (``RINGRT_TWO_LEVEL=direct``): every rank
  all-reduces inside its host, then swaps host sums with one rank of every other host: one
  shared-memory phase and one cross-host step, but every rank sends (slower on the 2-core
  lab).
- reduce / broadcast: through one leader per host (the root on its own host).
- all_gather: gather to the leader, leaders swap host blocks (one message per pair of
  hosts), broadcast inside the host.
- barrier: inside the host, leaders swap empty messages (one step), inside the host again.

gather, scatter, all_to_all and reduce_scatter stay flat (see ``choice.py``).

The inside-a-host level uses the host's shared-memory arena (``ringrt._comm.host_shm`` for
the world group, the subgroup's own per host for a subgroup: ``ringrt._comm.group_shm``) and
otherwise ipc sockets (RINGRT_NO_SHM, no /dev/shm). The cross-host
level runs the flat socket algorithms on a :class:`~ringrt._algorithms.layout.SubExchange`,
ring or recursive doubling etc. picked by the cost model (``choice.cross_algorithm``).

Reduction order: within a host in local-index order (shared memory) or the ring's/tree's
order (sockets), then the cross-host algorithm's order. Every rank ends with the same bits,
and the same inputs give the same bits run after run; against a flat algorithm the sums of
floats differ in rounding only (integers, and floats holding small integers, are exact).
"""

from __future__ import annotations

import numpy as np

from ringrt._algorithms import direct, ring, shm, tree
from ringrt._algorithms.choice import all_reduce_variant, cross_algorithm
from ringrt._algorithms.layout import Layout, SubExchange
from ringrt._algorithms.segments import chunk_bounds, segments
from ringrt._comm.shm import ShmOp

# Above this the inside-a-host level goes over ipc sockets: an op has at most 1023 shared-
# memory steps, and a leader-based all_reduce takes ~3 per 1 MiB piece.
SHM_MAX_BYTES = 256 << 20


class _Local:
    """The inside-a-host level of one op: ``shm(nbytes)`` gives the shared-memory op (all of
    one op's local steps share it), or None to use ipc sockets (``sockets``)."""

    def __init__(self, ex, where: Layout):
        self.ex = ex
        self.ranks = where.local_ranks(ex.rank)
        self.index = self.ranks.index(ex.rank)
        self.size = len(self.ranks)
        self.sockets = SubExchange(ex, list(self.ranks))
        arena = ex.group.host_arena           # the group's, over its ranks on this host
        self.arena = arena if arena is not None and arena.world_size == self.size else None
        self._op = None

    def shm(self, nbytes: int) -> ShmOp | None:
        if self.arena is None or nbytes > SHM_MAX_BYTES:
            return None
        if self._op is None:
            self.arena.publish(self.ex.published)
            self._op = self.ex.shm_over(self.arena, self.index, self.size, self._check)
        else:
            self._op.again()
        return self._op

    def _check(self, waiting=()) -> None:
        """A shared-memory wait's check: a local peer that published another call for this
        op is a mismatch; then the exchange's own checks (notices, lost peers, deadline)."""
        self.ex.check_published(self.arena, self.ranks)
        self.ex.check_while_shm([self.ranks[q] for q in waiting])

    # -- the local steps ----------------------------------------------------------------

    def reduce_scatter(self, flat: np.ndarray, combine) -> np.ndarray:
        """This rank's share of ``flat`` (``chunk_bounds(size, local ranks)``: local index i
        owns share i), reduced over the host in local-index order (the same bits every run);
        ``flat`` itself may be left with partial sums."""
        op = self.shm(flat.nbytes)
        if op is not None:
            shares = shm.blocks_of(flat, chunk_bounds(flat.size, op.size))
            share = np.empty(shares[op.rank].size, flat.dtype)
            op.acquire()
            shm.fit(op, shares[0].nbytes * op.size)      # shares[0] is the longest
            shm.reduce_scatter_blocks(op, shares, share, combine)
            op.phase()                     # every peer is done reading our slot
            return share
        chunks = ring.split(flat, self.size)
        ring.reduce_scatter_ring(self.sockets, chunks, combine)
        return chunks[self.index]

    def all_gather(self, flat: np.ndarray, share: np.ndarray) -> None:
        """``flat`` receives every local rank's share (this rank's from ``share``); after
        :meth:`reduce_scatter`, which left the shared-memory op acquired: releases it."""
        op = self.shm(flat.nbytes)
        if op is not None:
            shm.fit(op, flat.nbytes)
            shm.all_gather_blocks(op, shm.blocks_of(flat, chunk_bounds(flat.size, op.size)),
                                  share)
            op.release()
            return
        chunks = ring.split(flat, self.size)
        if chunks[self.index] is not share:
            chunks[self.index][...] = share
        ring.all_gather_ring(self.sockets, chunks)

    def all_reduce(self, flat: np.ndarray, combine) -> None:
        """Every local rank ends with the host's reduction (the same bits on each)."""
        op = self.shm(flat.nbytes)
        if op is not None:
            shm.all_reduce_shm(op, flat, combine)
        else:
            tree.all_reduce_recursive_doubling(self.sockets, flat, combine)

    def reduce(self, work: np.ndarray, combine, root: int) -> None:
        """Local index ``root``'s ``work`` becomes the host's reduction (others' ``work``
        may be overwritten: pass scratch copies)."""
        op = self.shm(work.nbytes)
        if op is not None:
            shm.reduce_shm(op, work, combine, root)
        elif work.nbytes < _LOCAL_SMALL:
            tree.reduce_binomial(self.sockets, work, combine, root)
        else:
            tree.reduce_chain(self.sockets, work, combine, root)

    def broadcast(self, flat: np.ndarray, root: int) -> None:
        op = self.shm(flat.nbytes)
        if op is not None:
            shm.broadcast_shm(op, flat, root)
        elif flat.nbytes < _LOCAL_SMALL:
            tree.broadcast_binomial(self.sockets, flat, root)
        else:
            tree.broadcast_chain(self.sockets, flat, root)

    def gather(self, outputs, mine: np.ndarray, root: int) -> None:
        op = self.shm(mine.nbytes * self.size)
        if op is not None:
            shm.gather_shm(op, outputs, mine, root)
        else:
            direct.gather_direct(self.sockets, outputs, mine, root)

    def barrier(self) -> None:
        op = self.shm(0)
        if op is not None:
            shm.barrier_shm(op)
        else:
            tree.barrier(self.sockets)


_LOCAL_SMALL = 64 * 1024            # ipc sockets: tree below, pipelined chain from here


def _local_root(where: Layout, leaders: list[int], rank: int) -> int:
    """Local index of the leader of ``rank``'s host."""
    host = where.host_of(rank)
    return where.hosts[host].index(leaders[host])


# -- the collectives ------------------------------------------------------------------------


def all_reduce(ex, flat: np.ndarray, combine) -> None:
    """In-place all-reduce of a 1-D array (see the module docstring)."""
    where = ex.group.layout
    local = _Local(ex, where)
    variant = all_reduce_variant(flat.nbytes, where.sizes, ex.group.settings)
    if variant == "direct":
        local.all_reduce(flat, combine)
        _swap_host_sums(ex, flat, combine, where)
        return
    if variant == "shares":
        share = local.reduce_scatter(flat, combine)
        _cross_all_reduce(SubExchange(ex, where.same_index(ex.rank)), share, combine,
                          streams=local.size)
        local.all_gather(flat, share)
        return
    leaders = where.leaders()
    local.reduce(flat, combine, 0)
    if ex.rank in leaders:
        _cross_all_reduce(SubExchange(ex, leaders), flat, combine, streams=1)
    local.broadcast(flat, 0)


def _swap_host_sums(ex, flat: np.ndarray, combine, where: Layout) -> None:
    """Every rank holds its host's sum; it sends it to the ranks of other hosts that picked
    it and receives one host sum from every other host (from the rank of that host with
    local index ``i % ranks there``), then adds the host sums in host order: one cross-host
    step, and every rank gets the same bits whatever the layout."""
    host = where.host_of(ex.rank)
    mine = where.hosts[host]
    index = mine.index(ex.rank)
    for g, ranks in enumerate(where.hosts):
        if g != host:
            for k, peer in enumerate(ranks):
                if k % len(mine) == index:
                    ex.send(peer, flat, snapshot=True)
    sums = []
    for g, ranks in enumerate(where.hosts):
        if g == host:
            sums.append(flat)
            continue
        partner = ranks[index % len(ranks)]
        sums.append(ex.as_array(ex.recv(partner), flat.dtype, flat.size, partner))
    total = sums[0].copy()
    for other in sums[1:]:
        combine(total, other)
    flat[...] = total


def _cross_all_reduce(cross: SubExchange, data: np.ndarray, combine, streams: int) -> None:
    if cross.size < 2:
        return
    algorithm = cross_algorithm("all_reduce", data.nbytes, cross.size, streams)
    if algorithm == "ring":
        ring.all_reduce_ring(cross, data, combine)
    elif algorithm == "direct":
        _all_reduce_direct(cross, data, combine)
    else:
        tree.all_reduce_recursive_doubling(cross, data, combine)


def _all_reduce_direct(ex, data: np.ndarray, combine) -> None:
    """One step: every rank sends its array to every other, then each sums all of them in
    rank order (so every rank gets the same bits). Sends are snapshots: ``data`` is
    overwritten while zmq may still be sending it. An empty array still sends one (empty)
    message to every peer: the barrier relies on it."""
    pieces = segments(0, data.size, data.itemsize) or [(0, 0)]   # empty: still one message
    for peer in range(ex.size):
        if peer != ex.rank:
            for a, b in pieces:
                ex.send(peer, data[a:b], snapshot=True)
    arrays = [data if q == ex.rank else np.empty_like(data) for q in range(ex.size)]
    for peer in range(ex.size):
        if peer != ex.rank:
            into = arrays[peer]
            for a, b in pieces:
                into[a:b] = ex.as_array(ex.recv(peer), into.dtype, b - a, peer)
    total = arrays[0] if ex.rank == 0 else arrays[0].copy()
    for other in arrays[1:]:
        combine(total, other)
    if total is not data:
        data[...] = total


def reduce(ex, work: np.ndarray, combine, root: int) -> None:
    """``root``'s ``work`` becomes the reduction (pass scratch copies on the other ranks)."""
    where = ex.group.layout
    leaders = where.leaders(root)
    local = _Local(ex, where)
    local.reduce(work, combine, _local_root(where, leaders, ex.rank))
    if ex.rank in leaders and len(leaders) > 1:
        cross = SubExchange(ex, leaders)
        to = leaders.index(root)
        if cross_algorithm("reduce", work.nbytes, cross.size, 1) == "binomial":
            tree.reduce_binomial(cross, work, combine, to)
        else:
            tree.reduce_chain(cross, work, combine, to)


def broadcast(ex, flat: np.ndarray, root: int) -> None:
    where = ex.group.layout
    leaders = where.leaders(root)
    if ex.rank in leaders and len(leaders) > 1:
        cross = SubExchange(ex, leaders)
        source = leaders.index(root)
        if cross_algorithm("broadcast", flat.nbytes, cross.size, 1) == "binomial":
            tree.broadcast_binomial(cross, flat, source)
        else:
            tree.broadcast_chain(cross, flat, source)
    _Local(ex, where).broadcast(flat, _local_root(where, leaders, ex.rank))


def all_gather(ex, outputs: list[np.ndarray], mine: np.ndarray) -> None:
    """``outputs[g]`` receives group rank g's ``mine``: host blocks gathered to the leaders,
    swapped between leaders, broadcast inside each host."""
    where = ex.group.layout
    count = mine.size
    order = [g for ranks in where.hosts for g in ranks]           # ranks in host order
    full = np.empty(count * len(order), mine.dtype)
    blocks, start = [], 0
    for ranks in where.hosts:
        blocks.append(full[start:start + count * len(ranks)])
        start += count * len(ranks)
    host = where.host_of(ex.rank)
    local = _Local(ex, where)
    mine_block = blocks[host]
    local.gather([mine_block[j * count:(j + 1) * count] for j in range(local.size)], mine, 0)
    leaders = where.leaders()
    if ex.rank in leaders:
        direct.all_gather_direct(SubExchange(ex, leaders), blocks, mine_block)
    local.broadcast(full, 0)
    for position, g in enumerate(order):
        outputs[g][...] = full[position * count:(position + 1) * count]


def barrier(ex) -> None:
    """A barrier inside the host, an empty message from every leader to every other (one
    step: a leader that heard from all knows every host arrived), a barrier inside the host."""
    where = ex.group.layout
    local = _Local(ex, where)
    local.barrier()
    leaders = where.leaders()
    if ex.rank in leaders:
        _all_reduce_direct(SubExchange(ex, leaders), np.zeros(0, np.uint8),
                           lambda into, other: None)
    local.barrier()
