"""The one place that picks a collective's algorithm.

Which algorithm runs is decided by :func:`choose` from the op, the message size and the group
size; ``RINGRT_ALGO`` forces a choice so tests can cover every
algorithm, e.g. ``RINGRT_ALGO=all_reduce=ring,broadcast=binomial``.

Thresholds (bytes of the whole array) and why:
- all_reduce below ``ALL_REDUCE_SMALL`` uses recursive doubling: log2(n) steps of one message
  each beats the ring's 2(n-1) steps while latency dominates; above it the ring moves
  2(n-1)/n of the data per rank, the bandwidth optimum.
- broadcast below ``BROADCAST_SMALL`` uses a binomial tree (log2(n) steps); above it a
  pipelined chain, which streams segments so every link is busy at once.
- reduce below ``ALL_REDUCE_SMALL`` uses a binomial tree; above it a pipelined chain (every
  link carries the data once; ring reduce-scatter + gather, also available, loads the root's
  link with 2(n-1)/n of it, so it ran slower across hosts: the cluster benchmark, docs/cluster.md).
- all_gather / reduce_scatter below ``GATHER_SMALL`` send directly to every peer (one step);
  above it the ring.
- When every rank of the group is on one host (and there are at least two: alone, the socket
  algorithms send nothing while shared memory would still copy in and out), all_reduce,
  broadcast, reduce, all_gather, reduce_scatter, all_to_all (uneven blocks too) and barrier
  go through shared memory (``shm``) at every size, on the world's arena or the subgroup's
  own (``_comm/group_shm``: sized on use, so the choice sees its limit), gather and scatter
  too (with more ranks than cores, from ``SHM_FROM_OVERSUBSCRIBED`` up): one memory copy in
  and one out instead of
  socket round trips (see ``ringrt._comm.shm``; ``RINGRT_NO_SHM=1`` or
  ``RINGRT_ALGO=all_reduce=ring`` etc. turn it off). Over sockets, reduce, scatter and
  all_to_all on the "ringrt" torch backend took about gloo's time or more from medium sizes;
  shared memory is what brings them under gloo's time (the torch collectives benchmark,
  ``make bench-torch``, checks it; figures in docs/performance-notes.md).
- Across hosts, when some host has several ranks of the group, all_reduce, broadcast (from
  ``ROOTED_TWO_LEVEL_FROM``), reduce (idem), all_gather and barrier go in two levels
  (``hierarchical``: inside each host, between hosts, back; see ``hierarchical.py``) whenever
  the cost model predicts that faster than the flat algorithm that would run by more than
  the model's demonstrated error (``TWO_LEVEL_MARGIN``; ``cost_model.prefer_two_level``,
  which counts the hosts' load, ranks per core from every rank's card, and which flat steps
  stay inside a host). ``RINGRT_ALGO=all_reduce=hierarchical`` forces it (where the group
  spans hosts), ``RINGRT_ALGO=all_reduce=ring`` etc. force flat.
  gather, scatter and all_to_all stay flat: every block crosses the links once either way,
  and direct sends already take one step. reduce_scatter stays flat too (not built: a
  two-level one would need a cross-host reduce-scatter of every local share).
- Across hosts, all_reduce and broadcast take their small/large threshold from the alpha-beta
  cost model (``cost_model``) with the parameters fitted on the netlab 1 Gbit/s lab
  (docs/cluster.md): the crossover grows with the group size (recursive doubling's log2(n)
  steps beat the ring's 2(n-1) for larger messages as n grows). It is clamped to
  [64 KiB, 1 MiB] because our recursive doubling and binomial tree send unsegmented
  messages, which the model does not charge for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ringrt._algorithms import cost_model
from ringrt._settings import Settings, read_setting
from ringrt._algorithms.shm import MAX_PIECES as SHM_MAX_PIECES  # pieces of at most half a slot

ALL_REDUCE_SMALL = 64 * 1024
BROADCAST_SMALL = 64 * 1024
GATHER_SMALL = 64 * 1024


@dataclass(frozen=True)
class OpChoices:
    """The algorithms of one op: over sockets ``small`` below ``threshold`` bytes and
    ``large`` from it (``large`` None: ``small`` at every size), and ``also`` those that
    other facts pick (shared memory, hosts) or ``RINGRT_ALGO`` forces."""

    small: str
    large: str | None = None
    threshold: int | None = None
    also: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.small, *((self.large,) if self.large else ()), *self.also)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, algorithm: object) -> bool:
        return algorithm in self.names

    def by_size(self, nbytes: int) -> str:
        """The socket algorithm for ``nbytes`` by the fixed threshold."""
        if self.large is None or self.threshold is None or nbytes < self.threshold:
            return self.small
        return self.large


CHOICES = {
    "all_reduce": OpChoices("recursive_doubling", "ring", ALL_REDUCE_SMALL,
                            ("shm", "hierarchical")),
    "broadcast": OpChoices("binomial", "chain", BROADCAST_SMALL, ("shm", "hierarchical")),
    "reduce": OpChoices("binomial", "chain", ALL_REDUCE_SMALL, ("ring", "shm", "hierarchical")),
    "all_gather": OpChoices("direct", "ring", GATHER_SMALL, ("shm", "hierarchical")),
    "reduce_scatter": OpChoices("direct", "ring", GATHER_SMALL, ("shm",)),
    "gather": OpChoices("direct", also=("shm",)),
    "scatter": OpChoices("direct", also=("shm",)),
    "all_to_all": OpChoices("direct", also=("shm",)),
    "barrier": OpChoices("recursive_doubling", also=("shm", "hierarchical")),
}


@dataclass(frozen=True)
class Decision:
    """What :func:`choose` picked, and why (one of the reasons below; ``RINGRT_DEBUG``
    prints it with the facts behind it, see ``decisions.py``). ``declined_shm`` says why
    shared memory was not taken where the op has it: ``NO_SHM`` or ``OVERSUBSCRIBED``."""

    algorithm: str
    reason: str
    declined_shm: str = ""


# Reasons of a Decision.
FORCED = "forced by RINGRT_ALGO"
TWO_LEVEL = "two levels predicted faster than flat by the cost model"
SHARED_MEMORY = "every rank on one host: shared memory"
ONE_ALGORITHM = "the op has one socket algorithm"
CROSSOVER = "the cost model's crossover across hosts"
THRESHOLD = "the fixed size threshold"
# Why shared memory was declined.
NO_SHM = "no shared memory for this group"
OVERSUBSCRIBED = "more ranks than cores: shared memory only from a size"

_decision = functools.cache(Decision)       # a handful of distinct values, built once each

# With more ranks than cores, gather and scatter take shared memory only from this size:
# below it only the root needs to wait (sockets), where a shared-memory phase makes every rank
# wait for every other, and some of them are off the cores; from this size on, the socket
# copies saved outweigh that wait. With a core per rank nobody is off the cores and shared
# memory wins at every size. The torch collectives benchmark (make bench-torch) checks both,
# at world 4 and world 2 on 2 cores; figures in docs/performance-notes.md.
SHM_FROM_OVERSUBSCRIBED = {"gather": GATHER_SMALL, "scatter": GATHER_SMALL}


def forced(op: str) -> str | None:
    """The algorithm ``RINGRT_ALGO`` forces on ``op`` now, if any."""
    return _forced().get(op)


def _forced() -> dict[str, str]:
    """``RINGRT_ALGO`` as {op: algorithm}: read at every collective (a job may change it
    between ops, see ``_settings.PER_USE``), parsed once per value."""
    return forced_algorithms(read_setting("RINGRT_ALGO"))


@functools.lru_cache(maxsize=8)
def forced_algorithms(spec: str) -> dict[str, str]:
    """A ``RINGRT_ALGO`` value parsed, once per value (``choose`` runs on every collective);
    the dict is shared: read it, never change it."""
    forced = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        op, _, algo = item.partition("=")
        if op not in CHOICES or algo not in CHOICES[op]:
            valid = "; ".join(f"{k}={'|'.join(v.names)}" for k, v in CHOICES.items())
            raise ValueError(f"RINGRT_ALGO item {item!r} is not valid; choose from: {valid}")
        forced[op] = algo
    return forced


# Fitted on the netlab gige lab by the cost_model benchmark (docs/cluster.md): seconds per
# step, seconds per byte, seconds per extra message in flight.
NETWORK_ALPHA, NETWORK_BETA, NETWORK_OVERHEAD = 315e-6, 1 / 89.3e6, 253e-6
MODEL_THRESHOLD_RANGE = (64 * 1024, 1 << 20)


@functools.lru_cache(maxsize=256)
def network_threshold(op: str, world: int) -> int:
    """Bytes from which the large algorithm beats the small one across hosts (cost model)."""
    small, large = CHOICES[op].small, CHOICES[op].large
    crossing = cost_model.crossover(op, small, large, world, NETWORK_ALPHA, NETWORK_BETA,
                                     0.0, NETWORK_OVERHEAD)
    low, high = MODEL_THRESHOLD_RANGE
    return high if crossing is None else min(high, max(low, crossing))


# Broadcast and reduce stay flat below this: back to back, small ones ran slower in two levels
# than on a binomial tree, because a binomial root only sends, so consecutive ops overlap,
# while the shared-memory step inside a host makes every local rank wait for every other.
# Larger ones won in two levels. The cost model, which times one op alone, cannot see that
# overlap. The cluster benchmark's --hierarchical run (3 hosts x 4 ranks, docs/cluster.md)
# checks it; figures in docs/performance-notes.md.
ROOTED_TWO_LEVEL_FROM = 64 * 1024


# Two levels only where the model predicts them faster than flat by more than this fraction
# of flat's time: a smaller predicted gain is within the model's error, and flat runs. The
# margin covers the error the model showed in two levels' favour where the netlab runs
# measured two levels and flat as a tie; a wider one would also give back large arrays, where
# the model under-rates two levels. One tie (all_reduce 64 KiB on 3 hosts x 2 ranks) is
# over-rated by more and stays uncovered. The fit_two_level benchmark prints every point's
# predicted and measured ratio; figures in docs/performance-notes.md.
TWO_LEVEL_MARGIN = 0.10


def two_level(op: str, nbytes: int, host_sizes: tuple[int, ...] | None,
              host_cores: tuple[int, ...] | None = None,
              settings: Settings | None = None) -> bool:
    """Whether ``op`` goes in two levels (``hierarchical``) over hosts of ``host_sizes``
    ranks (``host_cores`` cores each, if known): forced by RINGRT_ALGO=op=hierarchical, or
    predicted faster than the flat algorithm that would otherwise run by more than
    ``TWO_LEVEL_MARGIN`` (network parameters of the gige lab, shared-memory ones for inside a
    host)."""
    if host_sizes is None or len(host_sizes) < 2 or max(host_sizes) < 2 or \
            "hierarchical" not in CHOICES[op]:
        return False
    forced = _forced().get(op)
    if forced is not None:
        return forced == "hierarchical"
    if op in ("broadcast", "reduce") and nbytes < ROOTED_TWO_LEVEL_FROM:
        return False
    variant = all_reduce_variant(nbytes, host_sizes, settings) if op == "all_reduce" else None
    return _predicted_two_level(op, nbytes, tuple(host_sizes), variant,
                                None if host_cores is None else tuple(host_cores))


@functools.lru_cache(maxsize=1024)
def _predicted_two_level(op: str, nbytes: int, host_sizes: tuple[int, ...],
                         variant: str | None, host_cores: tuple[int, ...] | None) -> bool:
    flat = _flat_across_hosts(op, nbytes, sum(host_sizes))
    return cost_model.prefer_two_level(op, nbytes, host_sizes, NETWORK_ALPHA, NETWORK_BETA,
                                       0.0, NETWORK_OVERHEAD, variant, host_cores, flat,
                                       TWO_LEVEL_MARGIN)


def _flat_across_hosts(op: str, nbytes: int, world: int) -> str:
    """The flat algorithm ``choose`` runs for ``op`` across hosts when not in two levels."""
    return _over_sockets(op, nbytes, world, True).algorithm


def _over_sockets(op: str, nbytes: int, world: int, spans_hosts: bool,
                  declined_shm: str = "") -> Decision:
    """The socket algorithm: across hosts of more than two ranks, all_reduce and broadcast
    by the cost model's crossover, the rest by the fixed threshold."""
    entry = CHOICES[op]
    if entry.large is None:
        return _decision(entry.small, ONE_ALGORITHM, declined_shm)
    if spans_hosts and op in ("all_reduce", "broadcast") and world > 2:
        large = nbytes >= network_threshold(op, world)
        return _decision(entry.large if large else entry.small, CROSSOVER, declined_shm)
    return _decision(entry.by_size(nbytes), THRESHOLD, declined_shm)


def all_reduce_variant(nbytes: int, host_sizes: tuple[int, ...],
                       settings: Settings | None = None) -> str:
    """``leaders``, unless ``RINGRT_TWO_LEVEL=direct|shares`` (shares only where hosts are
    even); see ``cost_model.two_level_all_reduce``.

    ``leaders`` is the default because on the netlab lab (3 hosts x 2 and x 4 ranks, all on
    2 cores) it won wherever the others differed: against ``direct`` on small arrays (every
    rank sending across hosts costs CPU the cores do not have), against ``shares`` on large
    ones, which the model prefers. Direct and shares should pay where every rank has a core
    and one process cannot fill the link. The cluster benchmark checks it (docs/cluster.md).
    """
    forced = read_setting("RINGRT_TWO_LEVEL") if settings is None else settings.two_level
    if forced == "shares":
        return "shares" if len(set(host_sizes)) == 1 else "leaders"
    return forced or "leaders"


@functools.lru_cache(maxsize=1024)
def cross_algorithm(op: str, nbytes: int, hosts: int, streams: int) -> str:
    """The flat algorithm of the cross-host step of a two-level op (see
    ``cost_model.cross_host``): ``all_reduce`` ring | recursive_doubling | direct, ``broadcast``
    binomial | chain, ``reduce`` binomial | ring (run as the chain: the same traffic)."""
    if nbytes < MODEL_THRESHOLD_RANGE[0] and op != "all_reduce":
        return CHOICES[op].small              # latency-bound: the tree
    return cost_model.cross_host(op, nbytes, hosts, streams, NETWORK_ALPHA, NETWORK_BETA,
                                 0.0, NETWORK_OVERHEAD)[0]


def choose(op: str, nbytes: int, shm_slot_bytes: int | None = None, world: int = 2,
           spans_hosts: bool = False, oversubscribed: bool = False,
           host_sizes: tuple[int, ...] | None = None,
           host_cores: tuple[int, ...] | None = None, settings: Settings | None = None
           ) -> Decision:
    """The algorithm for ``op`` on a payload of ``nbytes`` (the whole array, or the sum of
    the blocks one rank stages) in a group of ``world`` ranks. ``shm_slot_bytes`` is the
    arena's slot size (the most a group arena may grow to) when the group can use shared
    memory, else None; ``spans_hosts`` says
    whether its members are on more than one host; ``oversubscribed``, whether the host has
    fewer cores than ranks (shared memory only: every rank sees the same host);
    ``host_sizes``, the group's ranks per host when it spans hosts (for ``hierarchical``),
    ``host_cores`` their hosts' usable cores (from the rendezvous cards, so every rank sees
    the same); ``settings``, the group's (``RINGRT_TWO_LEVEL``; default: read now). Every
    rank computes the same answer, a :class:`Decision`."""
    forced = _forced().get(op)
    if two_level(op, nbytes, host_sizes, host_cores, settings):
        return _decision("hierarchical", FORCED if forced == "hierarchical" else TWO_LEVEL)
    if forced == "hierarchical":
        forced = None                        # one host, or one rank per host: flat
    has_shm = "shm" in CHOICES[op]
    shm_ok = shm_slot_bytes is not None and has_shm and world > 1 and \
        nbytes <= SHM_MAX_PIECES * (shm_slot_bytes // 2)
    if forced and (forced != "shm" or shm_ok):
        return _decision(forced, FORCED)
    if shm_ok and (not oversubscribed or nbytes >= SHM_FROM_OVERSUBSCRIBED.get(op, 0)):
        return _decision("shm", SHARED_MEMORY)
    declined = ""
    if shm_slot_bytes is not None and has_shm and oversubscribed and \
            nbytes < SHM_FROM_OVERSUBSCRIBED.get(op, 0):
        declined = OVERSUBSCRIBED
    elif shm_slot_bytes is None and has_shm and not spans_hosts:
        declined = NO_SHM
    return _over_sockets(op, nbytes, world, spans_hosts, declined)
