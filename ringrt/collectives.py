"""The public collectives. Each is a short wrapper: validate -> resolve group -> run.

Arguments follow ``torch.distributed``: arrays instead of tensors, results in place where
torch is in place, ``src``/``dst`` are global ranks (members of ``group``), ``group=None``
means the default group, and ``async_op=True`` returns a :class:`ringrt.Work`. On a rank that
is not a member of ``group`` a collective does nothing and returns None, as in torch.

A bad argument raises ``TypeError``/``ValueError`` on the rank that passed it, before any byte
is sent and before the op takes its sequence number: the rejected call is a purely local
event, so ``except ValueError: all_reduce(np.ascontiguousarray(x))`` carries on with the
other ranks, which simply wait for the corrected call. (Left uncaught, the error ends the
rank, and the others raise ``PeerLostError`` quoting it within a second or so.)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from ringrt import _validate
from ringrt._algorithms import decisions, direct, hierarchical, ring, shm, tree
from ringrt._algorithms.choice import choose
from ringrt._algorithms.small_all_reduce import SmallAllReduce
from ringrt._comm.shm import MAX_COUNTS
from ringrt._comm.wire import DTYPE_CODES, OP_CODES
from ringrt._comm.work import Work
from ringrt._process_group import NonMember, OpSpec, ProcessGroup
from ringrt._reduce_ops import ReduceOp, combiner, finish
from ringrt.distributed import resolve

Group = ProcessGroup | NonMember | None     # None: the default group; NonMember: a no-op


def _group(group, name: str):
    group = resolve(group, name)
    return None if isinstance(group, NonMember) else group


def _spec(name: str, wire_op: str, array: np.ndarray | None, algorithm: str,
          count: int | None = None, root: int = -1, redop: int = 0) -> OpSpec:
    dtype = DTYPE_CODES[None if array is None else array.dtype]
    if count is None:
        count = -1 if array is None else array.size
    return OpSpec(name, OP_CODES[wire_op], dtype, count, root, int(redop), algorithm)


def _algorithm(pg, op: str, nbytes: int) -> str:
    """Pick the algorithm (the same on every rank: it depends on shared facts only)."""
    arena = pg.arena
    host_sizes = pg.layout.sizes if pg.spans_hosts else None
    host_cores = pg.host_cores if pg.spans_hosts else None
    decision = choose(op, nbytes, arena.slot_limit if arena is not None else None, pg.size,
                      pg.spans_hosts, arena is not None and arena.oversubscribed, host_sizes,
                      host_cores, pg.settings)
    pg.count_choice(op, decision.algorithm)
    if pg.settings.debug:
        decisions.log(pg, op, nbytes, decision)
    return decision.algorithm


def _flat(array: np.ndarray) -> np.ndarray:
    return array.reshape(-1)


def _check_stacked(pg, name: str, output, input, stacked: str) -> None:
    """Checks of the *_tensor ops: writable output, and the ``stacked`` one ("input" or
    "output") holding world-size blocks of the other."""
    global_rank = pg.global_rank
    _validate.array(name, output, global_rank, "output", writable=True)
    _validate.array(name, input, global_rank, "input")
    big, small = (input, output) if stacked == "input" else (output, input)
    other = "output" if stacked == "input" else "input"
    _validate.leading_dim(name, big, small, pg.size, global_rank, stacked, other)


# -- reductions ---------------------------------------------------------------------------


def all_reduce(array: np.ndarray, op: ReduceOp = ReduceOp.SUM, group: Group = None,
               async_op: bool = False) -> Work | None:
    """Reduce ``array`` across the group, in place, leaving the result on every rank.

    Every rank ends with bit-identical results, and the same inputs give the same bits run
    after run. ::

        # rank 0: x = np.array([1., 2.])     # rank 1: x = np.array([3., 4.])
        dist.all_reduce(x)
        # rank 0: x == [4., 6.]              # rank 1: x == [4., 6.]

    Args:
        array: C-contiguous, writable NumPy array (any numeric dtype).
        op: ReduceOp.SUM, AVG (floating only), PRODUCT, MIN or MAX.
        group: process group (default: the world).
        async_op: return a Work instead of waiting.

    Raises:
        TypeError / ValueError: bad array or op on this rank (nothing is sent).
        CollectiveMismatchError: ranks called different ops, dtypes, sizes or reductions.
        PeerLostError: a peer died or went silent.
        TimeoutError: the op did not finish within the group's timeout.
    """
    pg = _group(group, "all_reduce")
    if pg is None:
        return None
    if not async_op:
        fast = pg.fast_paths.get("all_reduce")
        if fast is None:
            fast = fast_all_reduce(pg)
        if fast and fast.run(array, op):
            return None
    _validate.array("all_reduce", array, pg.global_rank, writable=True)
    redop = _validate.reduce_op("all_reduce", op, array.dtype, pg.global_rank)
    algorithm = _algorithm(pg, "all_reduce", array.nbytes)
    body = functools.partial(_all_reduce, flat=_flat(array), redop=redop, algorithm=algorithm)
    spec = _spec("all_reduce", "all_reduce", array, algorithm, redop=redop)
    return pg.run(spec, body, async_op)


def fast_all_reduce(pg) -> SmallAllReduce | bool:
    """The group's all_reduce fast path (made on first use, kept in ``pg.fast_paths``), or
    False where it has none (no shared memory, or ``RINGRT_NO_FAST_PATH``)."""
    fast = pg.fast_paths.get("all_reduce")
    if fast is None:
        fast = pg.fast_paths["all_reduce"] = \
            pg.arena is not None and pg.size >= 2 and not pg.settings.no_fast_path \
            and SmallAllReduce(pg, _validate.reduce_op)
    return fast


def _all_reduce(ex, flat, redop, algorithm):
    combine = combiner(redop, flat.dtype)
    if algorithm == "shm":
        shm.all_reduce_shm(ex.shm, flat, combine)
    elif algorithm == "hierarchical":
        hierarchical.all_reduce(ex, flat, combine)
    elif algorithm == "ring":
        ring.all_reduce_ring(ex, flat, combine)
    else:
        tree.all_reduce_recursive_doubling(ex, flat, combine)
    ex.finish()                 # zmq may still read flat for the last sends: wait before AVG
    finish(redop, flat, ex.size)


def reduce(array: np.ndarray, dst: int, op: ReduceOp = ReduceOp.SUM, group: Group = None,
           async_op: bool = False) -> Work | None:
    """Reduce ``array`` across the group into ``dst``'s array (other ranks' arrays are left
    unchanged). ::

        # rank 0: x = [1, 2]   rank 1: x = [3, 4]
        dist.reduce(x, dst=0)
        # rank 0: x == [4, 6]  rank 1: x == [3, 4]

    Raises: as :func:`all_reduce`; ValueError if ``dst`` is not a member.
    """
    pg = _group(group, "reduce")
    if pg is None:
        return None
    _validate.array("reduce", array, pg.global_rank)
    root = _validate.root("reduce", dst, pg.members, pg.global_rank, "dst")
    if pg.rank == root:
        _validate.writable_array("reduce", array, pg.global_rank)
    redop = _validate.reduce_op("reduce", op, array.dtype, pg.global_rank)
    algorithm = _algorithm(pg, "reduce", array.nbytes)
    body = functools.partial(_reduce, flat=_flat(array), root=root, redop=redop,
                             algorithm=algorithm)
    spec = _spec("reduce", "reduce", array, algorithm, root=root, redop=redop)
    return pg.run(spec, body, async_op)


def _reduce(ex, flat, root, redop, algorithm):
    combine = combiner(redop, flat.dtype)
    if algorithm == "shm":
        shm.reduce_shm(ex.shm, flat, combine, root)
        if ex.rank == root:
            finish(redop, flat, ex.size)
        return
    work = flat if ex.rank == root else flat.copy()
    if algorithm == "hierarchical":
        hierarchical.reduce(ex, work, combine, root)
    elif algorithm == "chain":
        tree.reduce_chain(ex, work, combine, root)
    elif algorithm == "ring":
        ring.reduce_ring(ex, work, combine, root)
    else:
        tree.reduce_binomial(ex, work, combine, root)
    if ex.rank == root:
        finish(redop, work, ex.size)


def reduce_scatter(output: np.ndarray, input_list: Sequence[np.ndarray],
                   op: ReduceOp = ReduceOp.SUM, group: Group = None,
                   async_op: bool = False) -> Work | None:
    """Reduce ``input_list[j]`` over all ranks into rank j's ``output``. ::

        # rank 0: inputs = [a0, b0]   rank 1: inputs = [a1, b1]
        dist.reduce_scatter(out, inputs)
        # rank 0: out == a0 + a1      rank 1: out == b0 + b1

    Raises: as :func:`all_reduce`; ValueError on a wrong list length or shapes.
    """
    pg = _group(group, "reduce_scatter")
    if pg is None:
        return None
    global_rank = pg.global_rank
    _validate.array("reduce_scatter", output, global_rank, "output", writable=True)
    inputs = _validate.array_list("reduce_scatter", input_list, pg.size, global_rank, "input_list",
                                  like=output)
    redop = _validate.reduce_op("reduce_scatter", op, output.dtype, global_rank)
    algorithm = _algorithm(pg, "reduce_scatter", output.nbytes * pg.size)
    body = functools.partial(_reduce_scatter, output=_flat(output),
                             inputs=[_flat(x) for x in inputs], redop=redop, algorithm=algorithm)
    spec = _spec("reduce_scatter", "reduce_scatter", output, algorithm, redop=redop)
    return pg.run(spec, body, async_op)


def reduce_scatter_tensor(output: np.ndarray, input: np.ndarray, op: ReduceOp = ReduceOp.SUM,
                          group: Group = None, async_op: bool = False) -> Work | None:
    """Like :func:`reduce_scatter` with the inputs stacked in one array:
    ``input.shape[0] == world_size * output.shape[0]``; rank j gets the reduced j-th block."""
    pg = _group(group, "reduce_scatter_tensor")
    if pg is None:
        return None
    _check_stacked(pg, "reduce_scatter_tensor", output, input, stacked="input")
    redop = _validate.reduce_op("reduce_scatter_tensor", op, output.dtype, pg.global_rank)
    inputs = ring.split(_flat(input), pg.size)
    algorithm = _algorithm(pg, "reduce_scatter", output.nbytes * pg.size)
    body = functools.partial(_reduce_scatter, output=_flat(output), inputs=inputs, redop=redop,
                             algorithm=algorithm)
    spec = _spec("reduce_scatter_tensor", "reduce_scatter", output, algorithm, redop=redop)
    return pg.run(spec, body, async_op)


def _reduce_scatter(ex, output, inputs, redop, algorithm):
    combine = combiner(redop, output.dtype)
    if algorithm == "shm":
        shm.reduce_scatter_shm(ex.shm, inputs, output, combine)
    elif algorithm == "ring" and ex.size > 1:
        scratch = [x.copy() for x in inputs]            # inputs are the caller's: read-only
        ring.reduce_scatter_ring(ex, scratch, combine)
        output[...] = scratch[ex.rank]
    else:
        direct.reduce_scatter_direct(ex, inputs, output, combine)
    finish(redop, output, ex.size)


# -- data movement ------------------------------------------------------------------------


def broadcast(array: np.ndarray, src: int, group: Group = None,
              async_op: bool = False) -> Work | None:
    """Copy ``src``'s array into every rank's ``array`` (in place). ::

        # rank 0: x = [1, 2]   rank 1: x = [0, 0]
        dist.broadcast(x, src=0)
        # rank 0: x == [1, 2]  rank 1: x == [1, 2]

    Raises: TypeError/ValueError for a bad array or ``src``; the DistError family as
    :func:`all_reduce`.
    """
    pg = _group(group, "broadcast")
    if pg is None:
        return None
    _validate.array("broadcast", array, pg.global_rank)
    root = _validate.root("broadcast", src, pg.members, pg.global_rank, "src")
    if pg.rank != root:
        _validate.writable_array("broadcast", array, pg.global_rank)
    algorithm = _algorithm(pg, "broadcast", array.nbytes)
    body = functools.partial(_broadcast, flat=_flat(array), root=root, algorithm=algorithm)
    spec = _spec("broadcast", "broadcast", array, algorithm, root=root)
    return pg.run(spec, body, async_op)


def _broadcast(ex, flat, root, algorithm):
    if algorithm == "shm":
        shm.broadcast_shm(ex.shm, flat, root)
    elif algorithm == "hierarchical":
        hierarchical.broadcast(ex, flat, root)
    elif algorithm == "chain":
        tree.broadcast_chain(ex, flat, root)
    else:
        tree.broadcast_binomial(ex, flat, root)


def all_gather(array_list: Sequence[np.ndarray], array: np.ndarray, group: Group = None,
               async_op: bool = False) -> Work | None:
    """Gather every rank's ``array`` into ``array_list`` on every rank. ::

        # rank 0: x = [1]   rank 1: x = [2]
        dist.all_gather(out, x)          # out = [np.empty(1), np.empty(1)]
        # both ranks: out == [[1], [2]]

    Raises: ValueError on a wrong list length or shapes; DistError family.
    """
    pg = _group(group, "all_gather")
    if pg is None:
        return None
    global_rank = pg.global_rank
    _validate.array("all_gather", array, global_rank)
    outputs = _validate.array_list("all_gather", array_list, pg.size, global_rank, "array_list",
                                   writable=True, like=array)
    algorithm = _algorithm(pg, "all_gather", array.nbytes * pg.size)
    body = functools.partial(_all_gather, outputs=[_flat(o) for o in outputs], mine=_flat(array),
                             algorithm=algorithm)
    spec = _spec("all_gather", "all_gather", array, algorithm)
    return pg.run(spec, body, async_op)


def all_gather_into_tensor(output: np.ndarray, input: np.ndarray, group: Group = None,
                           async_op: bool = False) -> Work | None:
    """Like :func:`all_gather` into one array: ``output.shape[0] == world * input.shape[0]``,
    rank j's input landing in the j-th block. ``input`` may be this rank's own block of
    ``output`` (in-place all-gather, as torch allows; the ZeRO optimizer relies on it)."""
    pg = _group(group, "all_gather_into_tensor")
    if pg is None:
        return None
    _check_stacked(pg, "all_gather_into_tensor", output, input, stacked="output")
    algorithm = _algorithm(pg, "all_gather", input.nbytes * pg.size)
    body = functools.partial(_all_gather, outputs=ring.split(_flat(output), pg.size),
                             mine=_flat(input), algorithm=algorithm)
    spec = _spec("all_gather_into_tensor", "all_gather", input, algorithm)
    return pg.run(spec, body, async_op)


def _all_gather(ex, outputs, mine, algorithm):
    if algorithm == "shm":
        shm.all_gather_shm(ex.shm, outputs, mine)
    elif algorithm == "hierarchical":
        hierarchical.all_gather(ex, outputs, mine)
    elif algorithm == "ring":
        if outputs[ex.rank] is not mine:
            outputs[ex.rank][...] = mine
        ring.all_gather_ring(ex, outputs)
    else:
        direct.all_gather_direct(ex, outputs, mine)


def gather(array: np.ndarray, gather_list: Sequence[np.ndarray] | None = None, dst: int = 0,
           group: Group = None, async_op: bool = False) -> Work | None:
    """Collect every rank's ``array`` into ``gather_list`` on ``dst`` (ignored elsewhere)."""
    pg = _group(group, "gather")
    if pg is None:
        return None
    global_rank = pg.global_rank
    _validate.array("gather", array, global_rank)
    root = _validate.root("gather", dst, pg.members, global_rank, "dst")
    outputs = None
    if pg.rank == root:
        outputs = [_flat(o) for o in _validate.array_list(
            "gather", gather_list, pg.size, global_rank, "gather_list", writable=True, like=array)]
    algorithm = _algorithm(pg, "gather", array.nbytes)
    body = functools.partial(_gather, outputs=outputs, mine=_flat(array), root=root,
                             algorithm=algorithm)
    spec = _spec("gather", "gather", array, algorithm, root=root)
    return pg.run(spec, body, async_op)


def _gather(ex, outputs, mine, root, algorithm):
    if algorithm == "shm":
        shm.gather_shm(ex.shm, outputs, mine, root)
    else:
        direct.gather_direct(ex, outputs, mine, root)


def scatter(array: np.ndarray, scatter_list: Sequence[np.ndarray] | None = None, src: int = 0,
            group: Group = None, async_op: bool = False) -> Work | None:
    """Send ``scatter_list[j]`` from ``src`` into rank j's ``array``."""
    pg = _group(group, "scatter")
    if pg is None:
        return None
    global_rank = pg.global_rank
    _validate.array("scatter", array, global_rank, writable=True)
    root = _validate.root("scatter", src, pg.members, global_rank, "src")
    inputs = None
    if pg.rank == root:
        inputs = [_flat(x) for x in _validate.array_list(
            "scatter", scatter_list, pg.size, global_rank, "scatter_list", like=array)]
    algorithm = _algorithm(pg, "scatter", array.nbytes * pg.size)
    body = functools.partial(_scatter, inputs=inputs, output=_flat(array), root=root,
                             algorithm=algorithm)
    spec = _spec("scatter", "scatter", array, algorithm, root=root)
    return pg.run(spec, body, async_op)


def _scatter(ex, inputs, output, root, algorithm):
    if algorithm == "shm":
        shm.scatter_shm(ex.shm, inputs, output, root)
    else:
        direct.scatter_direct(ex, inputs, output, root)


def all_to_all(output_list: Sequence[np.ndarray], input_list: Sequence[np.ndarray],
               group: Group = None, async_op: bool = False) -> Work | None:
    """Rank j's ``output_list[i]`` receives rank i's ``input_list[j]`` (sizes may differ per
    pair, but must agree between sender and receiver)."""
    pg = _group(group, "all_to_all")
    if pg is None:
        return None
    global_rank = pg.global_rank
    inputs = _validate.array_list("all_to_all", input_list, pg.size, global_rank, "input_list")
    outputs = _validate.array_list("all_to_all", output_list, pg.size, global_rank, "output_list",
                                   writable=True)
    for i, (o, x) in enumerate(zip(outputs, inputs, strict=True)):
        if o.dtype != inputs[0].dtype or x.dtype != inputs[0].dtype:
            raise ValueError(f"all_to_all: every array must have dtype {inputs[0].dtype} "
                             f"on rank {global_rank} (entry {i} differs)")
    # Sizes differ per rank, so the choice sees none: every rank must choose alike.
    algorithm = _algorithm(pg, "all_to_all", 0) if pg.size <= MAX_COUNTS else "direct"
    body = functools.partial(_all_to_all_uneven, outputs=[_flat(o) for o in outputs],
                             inputs=[_flat(x) for x in inputs], algorithm=algorithm)
    spec = _spec("all_to_all", "all_to_all", inputs[0], algorithm, count=-1)
    return pg.run(spec, body, async_op)


def _all_to_all_uneven(ex, outputs, inputs, algorithm):
    def mismatch(q, detail):
        ex.mismatch([ex.group.members[q]], None, detail)

    if algorithm != "shm" or not shm.all_to_all_uneven_shm(ex.shm, outputs, inputs, mismatch):
        direct.all_to_all_direct(ex, outputs, inputs)


def all_to_all_single(output: np.ndarray, input: np.ndarray, group: Group = None,
                      async_op: bool = False) -> Work | None:
    """``all_to_all`` with equal splits of one array: block j of ``input`` goes to rank j,
    block i of ``output`` comes from rank i (``input.shape[0]`` divisible by world size)."""
    pg = _group(group, "all_to_all_single")
    if pg is None:
        return None
    global_rank = pg.global_rank
    _validate.array("all_to_all_single", input, global_rank, "input")
    _validate.array("all_to_all_single", output, global_rank, "output", writable=True)
    _validate.same_shape("all_to_all_single", output, input, global_rank, "output")
    rows = input.shape[0] if input.ndim else 1
    if rows % pg.size:
        raise ValueError(f"all_to_all_single: input.shape[0]={rows} is not divisible by the "
                         f"group size {pg.size} on rank {global_rank}")
    # Equal blocks on every rank by definition, so every rank may take shared memory.
    algorithm = _algorithm(pg, "all_to_all", input.nbytes)
    body = functools.partial(_all_to_all, outputs=ring.split(_flat(output), pg.size),
                             inputs=ring.split(_flat(input), pg.size), algorithm=algorithm)
    spec = _spec("all_to_all_single", "all_to_all", input, algorithm)
    return pg.run(spec, body, async_op)


def _all_to_all(ex, outputs, inputs, algorithm="direct"):
    if algorithm == "shm":
        shm.all_to_all_shm(ex.shm, outputs, inputs)
    else:
        direct.all_to_all_direct(ex, outputs, inputs)


def barrier(group: Group = None, async_op: bool = False) -> Work | None:
    """Wait until every rank of the group has reached the barrier."""
    pg = _group(group, "barrier")
    if pg is None:
        return None
    algorithm = _algorithm(pg, "barrier", 0)
    body = {"shm": _barrier_shm, "hierarchical": hierarchical.barrier}.get(algorithm, tree.barrier)
    return pg.run(_spec("barrier", "barrier", None, algorithm), body, async_op)


def _barrier_shm(ex):
    shm.barrier_shm(ex.shm)
