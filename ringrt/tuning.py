"""How ringrt picks a collective's algorithm across hosts, and the cost model behind the pick.

Nothing here is needed to run a job. It is what the benchmarks under ``benchmarks/cluster/``
fit and compare against, and what a person tuning ringrt to a cluster reads: the α-β-γ
:mod:`cost_model` (``cost_model.predict``, ``fit``, ``steps``, ``bus_factor``, the two-level
predictions and their constants), the network parameters the choice uses across hosts, and the
choice's steps for a group that spans hosts. To make ringrt run a given algorithm, set
``RINGRT_ALGO`` (docs/environment.md); ``ringrt.stats()["algorithms"]`` counts what ran.

Example::

    from ringrt.tuning import NETWORK, cost_model

    alpha, beta, gamma, overhead = NETWORK
    cost_model.predict("all_reduce", "ring", 1 << 20, 8, alpha, beta, gamma, overhead)
"""

from __future__ import annotations

from ringrt._algorithms import choice, cost_model

#: The network parameters (α s/step, β s/byte, γ s/byte, o s/message) the choice of
#: algorithm across hosts is computed with: fitted on the netlab gige lab.
NETWORK: tuple[float, float, float, float] = (choice.NETWORK_ALPHA, choice.NETWORK_BETA, 0.0,
                                              choice.NETWORK_OVERHEAD)

#: Two levels run only where the model predicts them faster than flat by more than this
#: fraction of flat's time.
TWO_LEVEL_MARGIN: float = choice.TWO_LEVEL_MARGIN


def two_level(op: str, nbytes: int, host_sizes: tuple[int, ...] | None,
              host_cores: tuple[int, ...] | None = None) -> bool:
    """Whether ``op`` on ``nbytes`` runs in two levels (``hierarchical``) over hosts of
    ``host_sizes`` ranks (``host_cores`` cores each, if known), as ringrt decides it.

    Args:
        op: the collective ("all_reduce", "broadcast", "reduce", "all_gather", "barrier").
        nbytes: the payload (the whole array).
        host_sizes: ranks on each host; None or one host: never two levels.
        host_cores: cores on each host, if known.

    Returns:
        True where ``RINGRT_ALGO`` forces ``hierarchical`` or the model predicts it faster.
    """
    return choice.two_level(op, nbytes, host_sizes, host_cores)


def flat_across_hosts(op: str, nbytes: int, world: int) -> str:
    """The flat algorithm ringrt runs for ``op`` on ``nbytes`` across hosts when it does not go
    in two levels, in a group of ``world`` ranks (e.g. "recursive_doubling", "ring")."""
    return choice._flat_across_hosts(op, nbytes, world)


def all_reduce_variant(nbytes: int, host_sizes: tuple[int, ...]) -> str:
    """The two-level all_reduce variant ringrt runs ("leaders", "direct" or "shares"; set by
    ``RINGRT_TWO_LEVEL``)."""
    return choice.all_reduce_variant(nbytes, host_sizes)


def cross_algorithm(op: str, nbytes: int, hosts: int, streams: int) -> str:
    """The flat algorithm of the cross-host step of a two-level ``op`` over ``hosts`` hosts
    with ``streams`` ranks a host sending at once."""
    return choice.cross_algorithm(op, nbytes, hosts, streams)


__all__ = ["cost_model", "NETWORK", "TWO_LEVEL_MARGIN", "two_level", "flat_across_hosts",
           "all_reduce_variant", "cross_algorithm"]
