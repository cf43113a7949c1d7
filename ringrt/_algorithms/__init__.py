"""Collective algorithms: short, named, selectable.

Each algorithm is a short function over a :class:`ringrt._comm.exchange.Exchange` (``ex``),
which sends and receives by group rank, or over a :class:`ringrt._comm.shm.ShmOp` (the
same-host shared-memory path). Imports flow one way: collectives -> algorithms -> comm.

    choice.py      choose(): which algorithm for an op, size and group (thresholds, RINGRT_ALGO)
    cost_model.py  the alpha-beta-gamma model behind the cross-host thresholds
    segments.py    cutting arrays into message-sized segments and chunks
    ring.py        pipelined ring all-reduce / reduce-scatter / all-gather / reduce
    tree.py        recursive doubling, binomial and chain broadcast / reduce, barrier
    direct.py      one-step gather / scatter / all-to-all / all-gather / reduce-scatter
    shm.py         shared-memory variants (one host); reduce-scatter/all-gather over blocks of
                   any sizes (also the two-level all_reduce's shares)
    layout.py      a group's ranks by host; SubExchange: an op over some of its ranks
    hierarchical.py  two-level collectives for groups spanning hosts
"""
