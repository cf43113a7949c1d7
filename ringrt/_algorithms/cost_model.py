"""The α-β-γ cost model of ringrt's collective algorithms (pure functions, no I/O).

A collective over ``n`` ranks on ``S`` bytes costs, for each algorithm, a linear form in four
machine parameters::

    T = a·α + b·β + c·γ + d·o

    α  seconds per dependent step (one message hop: wire latency + software per message)
    β  seconds per byte through one rank's link (1 / goodput)
    γ  seconds per byte of reduction arithmetic (np.add etc.)
    o  seconds per extra message a rank posts within one step (direct algorithms post n-1 at
       once: their latencies overlap, their software cost does not); 0 in the classic model

:func:`terms` returns ``(a, b, c, d)``; :func:`predict` evaluates it; :func:`fit` finds the
parameters that best explain measured times (least squares on relative error, every
parameter >= 0); :func:`best_algorithm` picks the cheapest algorithm. The formulas follow
Thakur, Rabenseifner & Gropp, "Optimization of collective communication operations in
MPICH" (IJHPCA 2005), adapted to ringrt's implementations (``ringrt/_algorithms``):

=================  ===============  ==========================================================
op                 algorithm        T(S, n)   (lg = ceil(log2 n), p = 2**floor(log2 n))
=================  ===============  ==========================================================
all_reduce         ring             2(n-1)α + 2(n-1)/n·Sβ + (n-1)/n·Sγ
all_reduce         recursive_dbl    log2(p)·(α + Sβ + Sγ)  [+ 2α + 2Sβ + Sγ if n != p]
reduce_scatter     ring             (n-1)α + (n-1)/n·S(β + γ)         (S: whole input)
reduce_scatter     direct           α + (n-2)o + (n-1)/n·S(β + γ)
all_gather         ring             (n-1)α + (n-1)/n·Sβ               (S: whole output)
all_gather         direct           α + (n-2)o + (n-1)/n·Sβ
broadcast          binomial         lg·(α + Sβ)
broadcast          chain            (n-1)α + (k + n - 2)·(S/k)β,  k = ceil(S / segment)
reduce             binomial         lg·(α + Sβ + Sγ)
reduce             ring             nα + (n-2)o + 2(n-1)/n·Sβ + (n-1)/n·Sγ
barrier            recursive_dbl    all_reduce recursive doubling with S = 0
=================  ===============  ==========================================================

Pipelining (ring steps and the chain are cut into ``segment``-byte messages) is modelled as
hiding each segment's latency behind the next one's transfer; the per-segment software cost
then shows up in the fitted β, which is why β is an *effective* per-byte cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ringrt._algorithms.segments import DEFAULT_SEGMENT_BYTES as DEFAULT_SEGMENT

PARAMETERS = ("alpha", "beta", "gamma", "overhead")

ALGORITHMS = {
    "all_reduce": ("ring", "recursive_doubling"),
    "reduce_scatter": ("ring", "direct"),
    "all_gather": ("ring", "direct"),
    "broadcast": ("binomial", "chain"),
    "reduce": ("binomial", "ring"),
    "barrier": ("recursive_doubling",),
}
# Algorithms only the cross-host step of a two-level op uses: with few hosts, every leader
# sending its array to every other one (one step) beats recursive doubling's log2 + 2.
CROSS_ONLY = {"all_reduce": ("direct",)}


@dataclass(frozen=True)
class Terms:
    """Coefficients of α, β, γ and o in one algorithm's time."""

    alpha: float
    beta: float = 0.0
    gamma: float = 0.0
    overhead: float = 0.0

    def __add__(self, other: Terms) -> Terms:
        return Terms(self.alpha + other.alpha, self.beta + other.beta,
                     self.gamma + other.gamma, self.overhead + other.overhead)

    def scaled(self, factor: float) -> Terms:
        return Terms(self.alpha * factor, self.beta * factor, self.gamma * factor,
                     self.overhead * factor)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.alpha, self.beta, self.gamma, self.overhead)


@dataclass(frozen=True)
class Fit:
    """Fitted parameters, with the fit's quality (relative errors of the points used)."""

    alpha: float
    beta: float
    gamma: float
    overhead: float
    rms_relative_error: float
    max_relative_error: float
    points: int

    @property
    def bandwidth(self) -> float:
        """Bytes per second, 1/β (inf when β is 0)."""
        return math.inf if self.beta == 0 else 1.0 / self.beta


@dataclass(frozen=True)
class Measurement:
    """One measured time: ``op`` run with ``algorithm`` on ``nbytes`` over ``world`` ranks."""

    op: str
    algorithm: str
    nbytes: int
    world: int
    seconds: float
    segment: int = DEFAULT_SEGMENT


def ceil_log2(n: int) -> int:
    return max(0, (n - 1).bit_length())


def _recursive_doubling(size: float, world: int) -> Terms:
    p = 1 << (world.bit_length() - 1)
    rounds = p.bit_length() - 1
    exchange = Terms(1.0, size, size).scaled(rounds)
    if world == p:
        return exchange
    return exchange + Terms(2.0, 2 * size, size)      # fold into a partner, hand back


def _ring(op: str, size: float, n: int) -> Terms:
    share = (n - 1) / n * size
    if op == "all_reduce":
        return Terms(2 * (n - 1), 2 * share, share)
    if op == "reduce_scatter":
        return Terms(n - 1, share, share)
    if op == "all_gather":
        return Terms(n - 1, share)
    if op == "reduce":                                 # ring reduce-scatter, chunks to root
        return Terms(n, 2 * share, share, max(0, n - 2))
    raise ValueError(f"no ring algorithm for {op}")


def _direct(op: str, size: float, n: int) -> Terms:
    share = (n - 1) / n * size
    extra = max(0, n - 2)
    if op == "all_gather":
        return Terms(1.0, share, 0.0, extra)
    if op == "reduce_scatter":
        return Terms(1.0, share, share, extra)
    if op == "all_reduce":                  # send the whole array to every peer, sum them all
        return Terms(1.0, (n - 1) * size, (n - 1) * size, extra)
    raise ValueError(f"no direct algorithm for {op}")


def _chain(size: float, n: int, segment: int) -> Terms:
    pieces = max(1, math.ceil(size / max(1, segment)))
    return Terms(n - 1, (pieces + n - 2) * size / pieces)


def terms(op: str, algorithm: str, nbytes: float, world: int,
          segment: int = DEFAULT_SEGMENT) -> Terms:
    """Coefficients (α, β, γ, o) of ``op`` with ``algorithm`` on ``nbytes`` over ``world`` ranks.

    ``nbytes`` is the array for all_reduce/broadcast/reduce, the whole output of all_gather
    and the whole input of reduce_scatter (nccl-tests' convention).

    Raises:
        ValueError: unknown op/algorithm pair, or world < 1.
    """
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    if algorithm not in ALGORITHMS.get(op, ()) + CROSS_ONLY.get(op, ()):
        raise ValueError(f"unknown algorithm {algorithm!r} for {op!r}; known: {ALGORITHMS}")
    if world == 1:
        return Terms(0.0)
    size = 0.0 if op == "barrier" else float(nbytes)
    if algorithm == "recursive_doubling":
        return _recursive_doubling(size, world)
    if algorithm == "ring":
        return _ring(op, size, world)
    if algorithm == "direct":
        return _direct(op, size, world)
    if algorithm == "chain":
        return _chain(size, world, segment)
    reduction = size if op == "reduce" else 0.0        # binomial broadcast / reduce
    return Terms(1.0, size, reduction).scaled(ceil_log2(world))


def predict(op: str, algorithm: str, nbytes: float, world: int, alpha: float, beta: float,
            gamma: float = 0.0, overhead: float = 0.0, segment: int = DEFAULT_SEGMENT) -> float:
    """Predicted seconds for one ``op`` (see :func:`terms` for what ``nbytes`` means)."""
    a, b, c, d = terms(op, algorithm, nbytes, world, segment).as_tuple()
    return a * alpha + b * beta + c * gamma + d * overhead


def steps(op: str, algorithm: str, world: int) -> int:
    """Dependent message steps (the α coefficient): the latency floor is steps x one-way."""
    return round(terms(op, algorithm, 0, world).alpha)


def best_algorithm(op: str, nbytes: float, world: int, alpha: float, beta: float,
                   gamma: float = 0.0, overhead: float = 0.0,
                   segment: int = DEFAULT_SEGMENT) -> str:
    """The algorithm with the lowest predicted time (ties: the first in ALGORITHMS[op])."""
    return min(ALGORITHMS[op], key=lambda algorithm: predict(
        op, algorithm, nbytes, world, alpha, beta, gamma, overhead, segment))


def crossover(op: str, small: str, large: str, world: int, alpha: float, beta: float,
              gamma: float = 0.0, overhead: float = 0.0, segment: int = DEFAULT_SEGMENT,
              max_bytes: int = 1 << 40) -> int | None:
    """Smallest power-of-two size at which ``large`` is predicted no slower than ``small``
    (None if it never is up to ``max_bytes``)."""
    size = 1
    while size <= max_bytes:
        args = (size, world, alpha, beta, gamma, overhead, segment)
        if predict(op, large, *args) <= predict(op, small, *args):
            return size
        size *= 2
    return None


def fit(points: list[Measurement], free: tuple[str, ...] = ("alpha", "beta", "gamma"),
        fixed: dict[str, float] | None = None) -> Fit:
    """Least-squares α, β, γ (and o if listed in ``free``) from measured times.

    Minimises the relative error (each row divided by its measured time, so a 4-byte op
    counts as much as a 64 MiB one); parameters that would come out negative are pinned to
    0 and the rest refitted. Parameters not in ``free`` take ``fixed`` values (default 0).

    Raises:
        ValueError: no points, an unknown parameter name, or a non-positive time.
    """
    if not points:
        raise ValueError("fit needs at least one measurement")
    unknown = set(free) - set(PARAMETERS)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}; use {PARAMETERS}")
    if any(p.seconds <= 0 for p in points):
        raise ValueError("every measured time must be > 0")
    fixed = {name: 0.0 for name in PARAMETERS} | dict(fixed or {})
    rows = np.array([terms(p.op, p.algorithm, p.nbytes, p.world, p.segment).as_tuple()
                     for p in points])
    times = np.array([p.seconds for p in points])
    values = _nonnegative_least_squares(rows, times, [PARAMETERS.index(n) for n in free],
                                        np.array([fixed[n] for n in PARAMETERS]))
    relative = rows @ values / times - 1.0
    return Fit(*(float(v) for v in values), float(np.sqrt(np.mean(relative ** 2))),
               float(np.max(np.abs(relative))), len(points))


def _nonnegative_least_squares(rows, times, free: list[int], values: np.ndarray) -> np.ndarray:
    """Weighted (1/time) least squares over the ``free`` columns, pinning negatives to 0."""
    values = values.astype(float).copy()
    free = list(free)
    weights = 1.0 / times
    while free:
        values[free] = 0.0
        residual = times - rows @ values
        solution, *_ = np.linalg.lstsq(rows[:, free] * weights[:, None], residual * weights,
                                       rcond=None)
        if (solution >= 0).all():
            values[free] = solution
            return values
        free.pop(int(np.argmin(solution)))
    return values


def link_beta(bits_per_second: float, efficiency: float = 119.5e6 * 8 / 1e9) -> float:
    """β of a link: seconds per byte of goodput. ``efficiency`` is TCP/IP/Ethernet goodput
    over line rate, as pyzmq PUSH/PULL measured it on netlab's link (the cluster benchmark)."""
    return 8.0 / (bits_per_second * efficiency)


def bus_factor(op: str, world: int) -> float:
    """nccl-tests' bus-bandwidth factor: busbw = (nbytes / time) x factor, comparable with
    the link's goodput for a bandwidth-optimal algorithm (0 for barrier and unknown ops)."""
    if world < 1:
        return 0.0
    if op == "all_reduce":
        return 2 * (world - 1) / world
    if op in ("all_gather", "reduce_scatter"):
        return (world - 1) / world
    if op in ("broadcast", "reduce"):
        return 1.0
    return 0.0


# -- two levels: hosts joined by a network, ranks inside a host by memory ------------------
#
# A group spread over H hosts with ``sizes[h]`` ranks each (n in all, L the most on a host).
# Network steps cost the α, β, γ, o above; a step inside a host costs ``local_alpha`` (a
# shared-memory phase) and ``local_beta`` per byte copied. Ranks of one host share its link,
# so k ranks sending across hosts at once see k·β each.
#
# =============  ==============================================================================
# op             two-level time (cross(op', S', H, k) = the cheaper flat algorithm of op' on
#                S' bytes over H ranks, with β·k)
# =============  ==============================================================================
# all_reduce     the cheaper of
#                shares (even hosts): 3αl + 3S·βl + cross(all_reduce, S/L, H, L)
#                  + steps·(L-1)·o   (each local index all-reduces its share; L messages on a
#                  link per step)
#                leaders: 3αl + (L+1)S·βl + cross(all_reduce, S, H, 1)
#                (cross all_reduce may also be "direct": α + (H-2)o + (H-1)S(β+γ))
#                direct (small): αl + L·S·βl + α + (f-1)o + f·S(β+γ), f = the most messages
#                  a rank sends (max over hosts h of Σ_g≠h ceil(L_g / L_h))
# broadcast      αl + S·βl + cross(broadcast, S, H, 1)
# reduce         2αl + 2S·βl + cross(broadcast, S, H, 1) + S·γ   (chain/tree: broadcast's traffic)
# all_gather     2αl + 2S·βl + α + (H-2)o + (H-1)/H·S·β            (leaders swap host blocks)
# barrier        2αl + e·α + (H-2)o   (leaders swap empty messages: one step; e = EMPTY_STEP)
# =============  ==============================================================================
#
# The flat algorithms on the same hosts: the classic formulas over n ranks, with β scaled by
# the ranks of one host that cross its link at once: L for direct (every rank sends to every
# remote peer at once), 1 for ring and trees (ranks grouped by host: one ring edge leaves each
# host). Recursive doubling is costed step by step (:func:`doubling_steps`): a step whose
# pairs are all on one host goes over ipc sockets (``local_step`` + the bytes at memory
# speed), and a step where k of a host's ranks send across hosts at once moves k·S through its
# link. On 3 x 2 ranks its steps carry S (one host), S, 2S and S (one host); on 3 x 4, S, S
# (one host), 2S, 4S, S (one host). The classic formula, every step α + S·β on the network,
# over-rates flat recursive doubling on 3 x 2 ranks, which made two levels look faster than
# they are there, and under-rates it on 3 x 4; charging β·L for every step instead
# over-rates large arrays. Costed step by step (with the load below) it follows the netlab
# runs: the fit_two_level benchmark prints predicted against measured times; figures in
# docs/performance-notes.md.
#
# Load: where a host has more ranks than cores, every socket step (network or ipc: Python,
# zmq's I/O threads, CurveZMQ) time-shares the cores, so its α and o grow by
# load = max over hosts of (ranks / cores), at least 1. A shared-memory phase does not: its
# cost is already the wake-up of descheduled ranks (fitted under load below). On the netlab
# lab (2 cores per host) socket steps took about twice as long with 4 ranks a host as with
# 1 or 2, while a shared-memory phase cost the same (the cluster benchmark's --hierarchical
# runs; figures in docs/performance-notes.md).

TWO_LEVEL_OPS = ("all_reduce", "broadcast", "reduce", "all_gather", "barrier")
# A shared-memory phase inside a host, and a byte of memory copy, as on the netlab lab, where
# 6-12 ranks of 3 "hosts" share 2 cores: a phase costs several times what it does with a core
# per rank (a descheduled local rank has to be woken), at 2 and at 4 ranks a host alike, and
# a copy gets a fraction of the machine's bandwidth with the cores shared. One step of a flat
# algorithm between ranks of one host (ipc sockets) costs about what a network step does there
# (CPU, not the wire, paces a step on that lab). Both fitted, with α, β and o as fitted for
# the flat algorithms, on the flat recursive-doubling and two-level (leaders) 4 B-4 KiB
# all_reduces of 3 x 2 and 3 x 4 ranks by the fit_two_level benchmark; figures in
# docs/performance-notes.md.
LOCAL_ALPHA, LOCAL_BETA = 0.31e-3, 1 / 2e9
LOCAL_STEP_ALPHA = 0.30e-3
# A step of empty messages (a barrier) costs this fraction of an all_reduce step's α: no
# array to snapshot, check or combine. Fitted by the fit_two_level benchmark on flat
# recursive-doubling barriers against 4 B all_reduces of 3 x 2 and 3 x 4 ranks; figures in
# docs/performance-notes.md.
EMPTY_STEP = 0.87


def load_factor(sizes: tuple[int, ...], cores: tuple[int, ...] | None) -> float:
    """How much slower a socket step runs because a host has more ranks than cores: the most
    ranks per core of any host (it paces every step), at least 1; 1 when cores are unknown."""
    if not cores:
        return 1.0
    return max(1.0, max(size / max(1, count) for size, count in zip(sizes, cores)))


def doubling_steps(sizes: tuple[int, ...]) -> list[int]:
    """Recursive doubling over ranks grouped by host (``ringrt._algorithms.tree``: fold 2i
    into 2i+1, rounds over the virtual ranks, hand back), step by step: the most messages
    one host sends across hosts in that step (its link carries them at once), 0 for a step
    whose pairs are all on one host."""
    host = [h for h, size in enumerate(sizes) for _ in range(size)]
    n = len(host)
    p = 1 << (n.bit_length() - 1)
    rem = n - p
    real = [2 * v + 1 if v < rem else v + rem for v in range(p)]

    def busiest(pairs: list[tuple[int, int]]) -> int:
        leaving = [0] * len(sizes)
        for a, b in pairs:
            if host[a] != host[b]:
                leaving[host[a]] += 1
        return max(leaving)

    fold = busiest([(2 * i, 2 * i + 1) for i in range(rem)]) if rem else None
    rounds = []
    mask = 1
    while mask < p:
        rounds.append(busiest([(real[v], real[v ^ mask]) for v in range(p)]))
        mask <<= 1
    return rounds if fold is None else [fold] + rounds + [fold]


def _cheapest(op: str, nbytes: float, world: int, alpha: float, beta: float, gamma: float,
              overhead: float, algorithms: tuple[str, ...]) -> tuple[str, float]:
    """(algorithm, seconds) of the cheapest of ``algorithms`` for ``op`` (0 s alone)."""
    if world < 2:
        return algorithms[0], 0.0
    timed = [(predict(op, a, nbytes, world, alpha, beta, gamma, overhead), a)
             for a in algorithms]
    seconds, algorithm = min(timed)
    return algorithm, seconds


def cross_host(op: str, nbytes: float, hosts: int, streams: int, alpha: float, beta: float,
               gamma: float = 0.0, overhead: float = 0.0) -> tuple[str, float]:
    """The cross-host step of a two-level op: ``streams`` groups of one rank per host run it
    at once over the same links, each step then posting ``streams - 1`` more messages per
    host (``overhead`` each). Returns (cheapest flat algorithm, seconds)."""
    algorithms = ALGORITHMS[op] + CROSS_ONLY.get(op, ())
    algorithm, seconds = _cheapest(op, nbytes, hosts, alpha, beta * max(1, streams), gamma,
                                   overhead, algorithms)
    extra = steps(op, algorithm, hosts) * (max(1, streams) - 1) * overhead
    return algorithm, seconds + extra


def two_level_all_reduce(nbytes: float, sizes: tuple[int, ...], alpha: float, beta: float,
                         gamma: float = 0.0, overhead: float = 0.0,
                         local_alpha: float = LOCAL_ALPHA, local_beta: float = LOCAL_BETA,
                         variant: str | None = None) -> tuple[str, float]:
    """The cheaper two-level all_reduce (or ``variant``'s time): ``shares`` (even hosts only:
    local reduce-scatter, L cross-host all-reduces of S/L, local all-gather; 3 copies of S
    through memory) or ``leaders`` (reduce to a leader, which adds L slots, leaders
    all-reduce S, broadcast: L + 1 copies); ``direct`` only when asked for (every rank
    all-reduces inside its host and swaps host sums with one rank of every other host: one
    phase, one step, but every rank sends). Returns (variant, seconds)."""
    hosts, most = len(sizes), max(sizes)
    net = (alpha, beta, gamma, overhead)
    size = float(nbytes)
    if variant == "direct":              # one local all-reduce, host sums swapped in one step
        fan_out = _fan_out(sizes)
        return "direct", local_alpha + most * size * local_beta + alpha + \
            (fan_out - 1) * overhead + fan_out * size * (beta + gamma)
    leaders = 3 * local_alpha + (most + 1) * size * local_beta + \
        cross_host("all_reduce", size, hosts, 1, *net)[1]
    if len(set(sizes)) != 1 or variant == "leaders":
        return "leaders", leaders
    shares = 3 * local_alpha + 3 * size * local_beta + \
        cross_host("all_reduce", size / most, hosts, most, *net)[1]
    if variant == "shares":
        return "shares", shares
    return ("shares", shares) if shares < leaders else ("leaders", leaders)


def _fan_out(sizes: tuple[int, ...]) -> int:
    """The most messages a rank sends when every rank swaps with one rank of every other host
    (max over hosts h of the sum over the others of ceil(L_g / L_h))."""
    return max(1, max(sum(-(-other // mine) for g, other in enumerate(sizes) if g != h)
                      for h, mine in enumerate(sizes)))


def predict_two_level(op: str, nbytes: float, sizes: tuple[int, ...], alpha: float,
                      beta: float, gamma: float = 0.0, overhead: float = 0.0,
                      local_alpha: float = LOCAL_ALPHA, local_beta: float = LOCAL_BETA,
                      variant: str | None = None,
                      cores: tuple[int, ...] | None = None) -> float:
    """Predicted seconds of ``op`` done in two levels over hosts of ``sizes`` ranks with
    ``cores`` cores each (unknown: no load; all_reduce: the cheaper variant, or ``variant``)."""
    hosts = len(sizes)
    load = load_factor(sizes, cores)
    alpha, overhead = alpha * load, overhead * load
    net = (alpha, beta, gamma, overhead)
    size = 0.0 if op == "barrier" else float(nbytes)
    if op == "all_reduce":
        return two_level_all_reduce(size, sizes, *net, local_alpha, local_beta, variant)[1]
    if op == "broadcast":
        return local_alpha + size * local_beta + cross_host(op, size, hosts, 1, *net)[1]
    if op == "reduce":
        return 2 * local_alpha + 2 * size * local_beta + size * gamma + \
            cross_host("broadcast", size, hosts, 1, *net)[1]
    if op == "all_gather":
        swap = 0.0 if hosts < 2 else alpha + max(0, hosts - 2) * overhead + \
            (hosts - 1) / hosts * size * beta
        return 2 * local_alpha + 2 * size * local_beta + swap
    if op == "barrier":                  # local barrier, leaders swap, local barrier
        return 2 * local_alpha + alpha * EMPTY_STEP + max(0, hosts - 2) * overhead
    raise ValueError(f"no two-level algorithm for {op!r}; those with one: {TWO_LEVEL_OPS}")


def predict_flat_on_hosts(op: str, algorithm: str, nbytes: float, sizes: tuple[int, ...],
                          alpha: float, beta: float, gamma: float = 0.0,
                          overhead: float = 0.0, cores: tuple[int, ...] | None = None,
                          local_step: float = LOCAL_STEP_ALPHA,
                          local_beta: float = LOCAL_BETA) -> float:
    """Predicted seconds of a flat algorithm over every rank of hosts of ``sizes`` ranks
    (ranks grouped by host, as ringrun numbers them) with ``cores`` cores each (unknown: no
    load). ``reduce`` with ``chain`` is costed as the broadcast chain it runs, plus the sums."""
    load = load_factor(sizes, cores)
    if algorithm == "recursive_doubling" and op in ("all_reduce", "barrier"):
        step = load * (EMPTY_STEP if op == "barrier" else 1.0)
        size = 0.0 if op == "barrier" else float(nbytes)
        return _doubling_on_hosts(size, sizes, alpha * step, beta, gamma, local_step * step,
                                  local_beta)
    if op == "reduce" and algorithm == "chain":
        return predict_flat_on_hosts("broadcast", "chain", nbytes, sizes, alpha, beta, gamma,
                                     overhead, cores) + nbytes * gamma
    sharing = max(sizes) if algorithm == "direct" else 1
    return predict(op, algorithm, nbytes, sum(sizes), alpha * load, beta * sharing, gamma,
                   overhead * load)


def _doubling_on_hosts(size: float, sizes: tuple[int, ...], alpha: float, beta: float,
                       gamma: float, local_step: float, local_beta: float) -> float:
    """Recursive doubling of ``size`` bytes, step by step (:func:`doubling_steps`)."""
    steps = doubling_steps(sizes)
    return sum(alpha + crossing * size * beta if crossing else local_step + size * local_beta
               for crossing in steps) + len(steps) * size * gamma


def prefer_two_level(op: str, nbytes: float, sizes: tuple[int, ...], alpha: float,
                     beta: float, gamma: float = 0.0, overhead: float = 0.0,
                     variant: str | None = None, cores: tuple[int, ...] | None = None,
                     flat: str | None = None, margin: float = 0.0) -> bool:
    """Whether two levels are predicted faster than the flat algorithm ``flat`` (default:
    the cheapest flat algorithm of ``op``) by more than ``margin`` (a fraction of flat's
    time: gains the model cannot resolve go to flat)."""
    if op not in TWO_LEVEL_OPS or len(sizes) < 2 or max(sizes) < 2:
        return False
    candidates = (flat,) if flat else ALGORITHMS[op]
    flat_seconds = min(predict_flat_on_hosts(op, a, nbytes, sizes, alpha, beta, gamma,
                                             overhead, cores) for a in candidates)
    two = predict_two_level(op, nbytes, sizes, alpha, beta, gamma, overhead, variant=variant,
                            cores=cores)
    return two <= (1.0 - margin) * flat_seconds
