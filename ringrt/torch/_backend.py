"""ProcessGroupRingrt: torch.distributed's ops on CPU tensors, run by ringrt's collectives.

torch calls a backend with lists of tensors and *group* ranks. Each method checks its
tensors (``_checks``), views them as NumPy arrays over the same memory (``_tensors``) and runs
the ringrt collective of the same name on the ringrt group behind this torch group (whose
members, in order, are the torch group's ranks, so group rank i is ``members[i]``): the same
algorithms, shared memory on one host included, and the same errors.

=================================================  ===========================================
torch method (C++ name, where DDP/FSDP call it)     ringrt
=================================================  ===========================================
allreduce, allreduce_coalesced                     all_reduce (coalesced: one flat buffer)
broadcast / reduce                                 broadcast / reduce
allgather, allgather_coalesced                     all_gather
all_gather_single (_allgather_base), ..._coalesced all_gather_into_tensor
reduce_scatter                                     reduce_scatter
reduce_scatter_single (_reduce_scatter_base), ..   reduce_scatter_tensor
gather / scatter / alltoall                        gather / scatter / all_to_all
all_to_all_single (alltoall_base)                  all_to_all_single, or all_to_all of views
barrier                                            barrier
send / recv / recv_anysource                       isend (a snapshot) / irecv (completed on
                                                   the waiting thread: ``DeferredWork``)
_start_coalescing / _end_coalescing                one Work for the ops in between
=================================================  ===========================================

Blocking calls run inline; async ones on ringrt's executor thread (``_work``).
"""

from __future__ import annotations

import functools
import os
import sys

import torch
import torch.distributed as dist

from ringrt import collectives, p2p
from ringrt._env import local_world_size
from ringrt._reduce_ops import ReduceOp
from ringrt.torch import _checks, _tensors
from ringrt.torch._work import DeferredWork, RingrtWork, completed, pending

BACKEND_NAME = "ringrt"
_DONE_KEPT = 4                  # completed Works kept for reuse (see _completed)


def _unheld(works: list):
    """The first of ``works`` that nothing but the list holds, or None."""
    for work in works:
        if sys.getrefcount(work) <= _HELD_BY_LIST_ONLY:
            return work
    return None


def _list_only_refcount() -> int:
    """``sys.getrefcount`` of an object only a list holds, as :func:`_unheld` sees it."""
    probe = [object()]
    for item in probe:
        return sys.getrefcount(item)
    raise AssertionError


_HELD_BY_LIST_ONLY = _list_only_refcount()


class ProcessGroupRingrt(dist.ProcessGroup):
    """A torch process group whose ops run over a ringrt group.

    Built by the backend's creator (``_creator``) for ``init_process_group("ringrt")`` and
    ``new_group(..., backend="ringrt")``; not meant to be built directly.

    Args:
        ringrt_group: the :class:`ringrt.ProcessGroup` carrying this group's ops.
        on_shutdown: called by :meth:`shutdown` (the creator closes the ringrt world there
            when this group owns it).
    """

    def __init__(self, ringrt_group, on_shutdown=None):
        super().__init__(ringrt_group.rank, ringrt_group.size)
        self.ringrt_group = ringrt_group
        self._members = ringrt_group.members
        self._global_rank = ringrt_group.global_rank              # quoted in errors
        self._on_shutdown = on_shutdown
        self._coalescing: list[RingrtWork] | None = None
        self._done: list[RingrtWork] = []          # see _completed
        self._group_name = self._group_desc = ""
        # How async ops run: "thread" (on ringrt's executor, overlapping the caller's work),
        # "inline" (on the caller's thread, before the call returns) or "auto": inline for
        # the async ops torch's C++ starts (DDP's bucket all-reduces) when this host has
        # fewer than two cores per rank (or the group is one rank), else thread. Overlap
        # needs a free core: without one, a DDP step communicated longer through the thread
        # than inline (the torch train_step benchmark, make bench-torch, times both ways;
        # figures in docs/performance-notes.md). Async
        # ops of torch's Python API always overlap (a script may rely on it).
        # RINGRT_TORCH_ASYNC sets the mode.
        self.async_mode = ringrt_group.settings.torch_async
        # alone in its group an op exchanges nothing: no work to overlap, inline is cheaper
        self._few_cores = _cores_per_local_rank() < 2 or ringrt_group.size == 1

    def getBackendName(self) -> str:
        return BACKEND_NAME

    # torch keeps a group's name and description in its C++ backends, which a Python
    # group has none of; these overrides (C++ names) keep them here (DeviceMesh reads them)
    def setGroupName(self, name: str) -> None:
        self._group_name = name

    def getGroupName(self) -> str:
        return self._group_name

    def setGroupDesc(self, description: str) -> None:
        self._group_desc = description

    def getGroupDesc(self) -> str:
        return self._group_desc

    def __repr__(self) -> str:
        return f"ProcessGroupRingrt(rank={self.rank()}, size={self.size()}, " \
               f"ranks={self._members})"

    # -- running ------------------------------------------------------------------------

    def _run(self, opts, starts, value, after=None, sender=None) -> RingrtWork:
        """Run ringrt ops: each of ``starts`` is ``start(async_op=...) -> ringrt Work | None``
        (a collective with its arguments bound).

        Inline when torch waits at once (or :attr:`async_mode` says so), else queued on
        ringrt's executor; ``after()`` runs once they are done (copying staged outputs back).
        """
        if not getattr(opts, "asyncOp", True) or self._inline():   # older torch: none
            for start in starts:
                start(async_op=False)
            if after is not None:
                after()
            work = completed(value, sender)
        else:
            work = pending([start(async_op=True) for start in starts], value, after, sender)
        if self._coalescing is not None:
            self._coalescing.append(work)
        return work

    def _inline(self) -> bool:
        """Whether an async op runs inline (see :attr:`async_mode`).

        In ``auto`` on few cores, only the ops torch's C++ starts run inline. torch hands
        those and its Python API's ops to this backend through the same C++ call with the
        same options, so the calling module is the one signal of which it was. It matters:
        a script may wait for an op from the Python API only after starting another (an
        ``irecv`` before its ``send``), which an inline op would deadlock.
        """
        mode = self.async_mode
        if mode != "auto":
            return mode == "inline"
        if not self._few_cores:
            return False
        caller = sys._getframe(2)                # the first frame outside this module
        while caller is not None and caller.f_globals.get("__name__") == __name__:
            caller = caller.f_back
        return caller is None or caller.f_globals.get("__name__") != _TORCH_API

    def _global(self, group_rank: int) -> int:
        return self._members[group_rank]

    def _reduction(self, op: str, opts, tensor) -> tuple[ReduceOp, float]:
        return _checks.reduce_op(op, opts.reduceOp, tensor, self._global_rank)

    # -- reductions -----------------------------------------------------------------------

    def allreduce(self, tensors, opts=None):
        if opts is not None and not opts.asyncOp and self._coalescing is None \
                and len(tensors) == 1:
            # the group's fast path on the tensor's own memory (no NumPy view, no ringrt
            # call between): a small blocking all_reduce on a group with shared memory
            tensor = tensors[0]
            fast = self.ringrt_group.fast_paths.get("all_reduce")
            if fast is None:
                fast = collectives.fast_all_reduce(self.ringrt_group)
            if fast and _tensors.is_plain(tensor):
                redop = _checks.plain_reduce_op(opts.reduceOp)
                if redop is not None and fast.run_memory(
                        tensor.data_ptr(), tensor.numel(), _tensors.NUMPY_DTYPES[tensor.dtype],
                        redop):
                    return self._completed(tensors)
        opts = opts if opts is not None else dist.AllreduceOptions()
        tensor = _checks.one_tensor("all_reduce", tensors, self._global_rank)
        redop, factor = self._reduction("all_reduce", opts, tensor)
        array = _tensors.flat(tensor)
        if factor != 1.0:
            tensor.detach().mul_(factor)
        start = functools.partial(collectives.all_reduce, array, redop, self.ringrt_group)
        return self._run(opts, [start], tensors)

    def _completed(self, tensors) -> RingrtWork:
        """The Work of an op that ran inline on ``tensors``: one made before, again, when
        nothing else holds it any more (torch drops a blocking op's Work once the next op
        is called), else a new one (kept for later, up to ``_DONE_KEPT``). Saves making a
        torch ``Work`` per small op; a Work someone holds is never touched."""
        kept = self._done
        work = _unheld(kept)
        if work is not None:
            work.done_again(tensors)
            return work
        work = completed(tensors)
        if len(kept) < _DONE_KEPT:
            kept.append(work)
        return work

    def allreduce_coalesced(self, tensors, opts=None):
        """One all_reduce over the tensors packed into one flat buffer (as gloo does)."""
        opts = opts if opts is not None else dist.AllreduceCoalescedOptions()
        if len(tensors) == 1:
            return self.allreduce(tensors, opts)
        checked = [_tensors.check("all_reduce_coalesced", t, self._global_rank, f"tensors[{i}]")
                   for i, t in enumerate(tensors)]
        if len({t.dtype for t in checked}) > 1:
            raise TypeError(f"all_reduce_coalesced: tensors must share one dtype, got "
                            f"{sorted(str(t.dtype) for t in checked)} on rank {self._global_rank}")
        if not checked:
            return self._run(opts, [], tensors)
        redop, factor = self._reduction("all_reduce_coalesced", opts, checked[0])
        packed = torch.cat([t.detach().reshape(-1) for t in checked])
        if factor != 1.0:
            packed.mul_(factor)
        array = _tensors.flat(packed)

        def unpack():
            offset = 0
            with torch.no_grad():
                for t in checked:
                    t.copy_(packed[offset:offset + t.numel()].view_as(t))
                    offset += t.numel()
        start = functools.partial(collectives.all_reduce, array, redop, self.ringrt_group)
        return self._run(opts, [start], tensors, unpack)

    def reduce(self, tensors, opts=None):
        opts = opts if opts is not None else dist.ReduceOptions()
        tensor = _checks.one_tensor("reduce", tensors, self._global_rank)
        root = _checks.root("reduce", opts.rootRank, self.size(), self._global_rank, "dst")
        redop, factor = self._reduction("reduce", opts, tensor)
        if factor != 1.0:
            scaled = tensor.detach() * factor
            if root == self.rank():
                tensor.detach().copy_(scaled)
            else:
                tensor = scaled                        # leave the caller's tensor as it was
        start = functools.partial(collectives.reduce, _tensors.flat(tensor), self._global(root),
                                  redop, self.ringrt_group)
        return self._run(opts, [start], tensors)

    def reduce_scatter(self, outputs, input_lists, opts=None):
        opts = opts if opts is not None else dist.ReduceScatterOptions()
        output = _checks.one_tensor("reduce_scatter", outputs, self._global_rank, "output")
        inputs = _checks.tensor_list("reduce_scatter", _single_list(input_lists), self.size(),
                                     self._global_rank, "input_list", like=output)
        redop, factor = self._reduction("reduce_scatter", opts, output)
        staging = _tensors.Staging()
        arrays = [staging.input(_scaled(t, factor)) for t in inputs]
        start = functools.partial(collectives.reduce_scatter, staging.output(output), arrays,
                                  redop, self.ringrt_group)
        return self._run(opts, [start], outputs,
                         staging.copy_back)

    def reduce_scatter_single(self, output, input, opts=None):
        opts = opts if opts is not None else dist.ReduceScatterOptions()
        return self._run(opts, [self._reduce_scatter_tensor(output, input, opts, "")], output)

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts=None):
        opts = opts if opts is not None else dist.ReduceScatterOptions()
        starts = [self._reduce_scatter_tensor(o, i, opts, "_coalesced")
                  for o, i in zip(outputs, inputs, strict=True)]
        return self._run(opts, starts, outputs)

    reduce_scatter_tensor_coalesced = reduce_scatter_single_coalesced

    def _reduce_scatter_tensor(self, output, input, opts, suffix):
        name = "reduce_scatter_tensor" + suffix
        _tensors.check(name, output, self._global_rank, "output")
        _tensors.check(name, input, self._global_rank, "input")
        _checks.same_kind(name, input, output, self._global_rank, "input",
                          output.numel() * self.size())
        redop, factor = self._reduction(name, opts, output)
        staging = _tensors.Staging()
        out, inp = staging.output(output), staging.input(_scaled(input, factor))

        def start(async_op):
            work = collectives.reduce_scatter_tensor(out, inp, redop, self.ringrt_group,
                                                     async_op=async_op)
            return _after(work, staging.copy_back)
        return start

    # -- data movement --------------------------------------------------------------------

    def broadcast(self, tensors, opts=None):
        opts = opts if opts is not None else dist.BroadcastOptions()
        tensor = _checks.one_tensor("broadcast", tensors, self._global_rank)
        root = _checks.root("broadcast", opts.rootRank, self.size(), self._global_rank, "src")
        start = functools.partial(collectives.broadcast, _tensors.flat(tensor),
                                  self._global(root), self.ringrt_group)
        return self._run(opts, [start], tensors)

    def allgather(self, output_lists, inputs, opts=None):
        opts = opts if opts is not None else dist.AllgatherOptions()
        return self._run(opts, [self._all_gather(output_lists, inputs, "all_gather")],
                         output_lists)

    def allgather_coalesced(self, output_lists, inputs, opts=None):
        """``output_lists[r][i]`` receives rank r's ``inputs[i]`` (torch's layout: one list
        per rank, each as long as ``inputs``); one all_gather per input."""
        opts = opts if opts is not None else dist.AllgatherOptions()
        name = "all_gather_coalesced"
        per_rank = _checks.tensor_lists(name, output_lists, self.size(), len(inputs),
                                        self._global_rank, "output_tensor_lists")
        starts = [self._all_gather([[outputs[i] for outputs in per_rank]], [tensor], name)
                  for i, tensor in enumerate(inputs)]
        return self._run(opts, starts, output_lists)

    def _all_gather(self, output_lists, inputs, name):
        tensor = _checks.one_tensor(name, inputs, self._global_rank)
        outputs = _checks.tensor_list(name, _single_list(output_lists), self.size(),
                                      self._global_rank, "output_tensor_list", like=tensor)
        staging = _tensors.Staging()
        arrays, mine = [staging.output(t) for t in outputs], staging.input(tensor)

        def start(async_op):
            work = collectives.all_gather(arrays, mine, self.ringrt_group, async_op=async_op)
            return _after(work, staging.copy_back)
        return start

    def all_gather_single(self, output, input, opts=None):
        opts = opts if opts is not None else dist.AllgatherOptions()
        return self._run(opts, [self._all_gather_tensor(output, input, "")], output)

    _allgather_base = all_gather_single

    def all_gather_single_coalesced(self, outputs, inputs, opts=None):
        opts = opts if opts is not None else dist.AllgatherOptions()
        starts = [self._all_gather_tensor(o, i, "_coalesced")
                  for o, i in zip(outputs, inputs, strict=True)]
        return self._run(opts, starts, outputs)

    allgather_into_tensor_coalesced = all_gather_single_coalesced

    def _all_gather_tensor(self, output, input, suffix):
        name = "all_gather_into_tensor" + suffix
        _tensors.check(name, output, self._global_rank, "output")
        _tensors.check(name, input, self._global_rank, "input")
        _checks.same_kind(name, output, input, self._global_rank, "output",
                          input.numel() * self.size())
        staging = _tensors.Staging()
        out, inp = staging.output(output), staging.input(input)

        def start(async_op):
            work = collectives.all_gather_into_tensor(out, inp, self.ringrt_group,
                                                      async_op=async_op)
            return _after(work, staging.copy_back)
        return start

    def gather(self, output_lists, inputs, opts=None):
        opts = opts if opts is not None else dist.GatherOptions()
        tensor = _checks.one_tensor("gather", inputs, self._global_rank)
        root = _checks.root("gather", opts.rootRank, self.size(), self._global_rank, "dst")
        staging = _tensors.Staging()
        arrays = None
        if root == self.rank():
            outputs = _checks.tensor_list("gather", _single_list(output_lists), self.size(),
                                          self._global_rank, "gather_list", like=tensor)
            arrays = [staging.output(t) for t in outputs]
        start = functools.partial(collectives.gather, staging.input(tensor), arrays,
                                  self._global(root), self.ringrt_group)
        return self._run(opts, [start], output_lists,
                         staging.copy_back)

    def scatter(self, outputs, input_lists, opts=None):
        opts = opts if opts is not None else dist.ScatterOptions()
        tensor = _checks.one_tensor("scatter", outputs, self._global_rank)
        root = _checks.root("scatter", opts.rootRank, self.size(), self._global_rank, "src")
        staging = _tensors.Staging()
        arrays = None
        if root == self.rank():
            inputs = _checks.tensor_list("scatter", _single_list(input_lists), self.size(),
                                         self._global_rank, "scatter_list", like=tensor)
            arrays = [staging.input(t) for t in inputs]
        start = functools.partial(collectives.scatter, staging.output(tensor), arrays,
                                  self._global(root), self.ringrt_group)
        return self._run(opts, [start], outputs,
                         staging.copy_back)

    def alltoall(self, outputs, inputs, opts=None):
        opts = opts if opts is not None else dist.AllToAllOptions()
        ins = _checks.tensor_list("all_to_all", inputs, self.size(), self._global_rank,
                                  "input_list")
        outs = _checks.tensor_list("all_to_all", outputs, self.size(), self._global_rank,
                                   "output_list")
        for i, t in enumerate(ins + outs):
            if t.dtype != ins[0].dtype:
                raise ValueError(f"all_to_all: every tensor must have dtype {ins[0].dtype} "
                                 f"on rank {self._global_rank} (entry {i % self.size()} differs)")
        staging = _tensors.Staging()
        out_arrays = [staging.output(t) for t in outs]
        start = functools.partial(collectives.all_to_all, out_arrays,
                                  [staging.input(t) for t in ins], self.ringrt_group)
        return self._run(opts, [start], outputs,
                         staging.copy_back)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes,
                          opts=None):
        """Uneven splits (rows per peer) become an all_to_all over views of the tensors."""
        opts = opts if opts is not None else dist.AllToAllOptions()
        name = "all_to_all_single"
        _tensors.check(name, output, self._global_rank, "output")
        _tensors.check(name, input, self._global_rank, "input")
        if output.dtype != input.dtype:
            raise ValueError(f"{name}: output is {output.dtype} but input is {input.dtype} "
                             f"on rank {self._global_rank}")
        size = self.size()
        out_rows = _checks.splits(name, output_split_sizes, output, size, self._global_rank,
                                  "output")
        in_rows = _checks.splits(name, input_split_sizes, input, size, self._global_rank, "input")
        staging = _tensors.Staging()
        out, inp = staging.output(output), staging.input(input)
        if not output_split_sizes and not input_split_sizes:
            # equal splits on every rank (torch's meaning of no sizes): shared memory allowed
            _checks.same_kind(name, output, input, self._global_rank, "output", input.numel())
            start = functools.partial(collectives.all_to_all_single, out, inp,
                                      self.ringrt_group)
        else:
            start = functools.partial(collectives.all_to_all, _row_views(out, output, out_rows),
                                      _row_views(inp, input, in_rows), self.ringrt_group)
        return self._run(opts, [start], output,
                         staging.copy_back)

    alltoall_base = all_to_all_single

    def barrier(self, opts=None):
        opts = opts if opts is not None else dist.BarrierOptions()
        start = functools.partial(collectives.barrier, self.ringrt_group)
        return self._run(opts, [start], None)

    # -- point to point -------------------------------------------------------------------

    def send(self, tensors, dst: int, tag: int = 0):
        """Sends a snapshot of the tensor (so it never blocks on the receiver, as isend must
        not); the Work is complete at once."""
        tensor = _checks.one_tensor("send", tensors, self._global_rank)
        _checks.root("send", dst, self.size(), self._global_rank, "dst")
        p2p.isend(_tensors.flat(tensor), self._global(dst), tag, self.ringrt_group)
        return self._coalesced(completed(tensors))

    def recv(self, tensors, src: int, tag: int = 0):
        tensor = _checks.one_tensor("recv", tensors, self._global_rank)
        _checks.root("recv", src, self.size(), self._global_rank, "src")
        work = p2p.irecv(_tensors.flat(tensor), self._global(src), tag, self.ringrt_group)
        return self._coalesced(DeferredWork([work], tensors, sender=[src]))

    def recv_anysource(self, tensors, tag: int = 0):
        tensor = _checks.one_tensor("recv", tensors, self._global_rank)
        work = p2p.irecv(_tensors.flat(tensor), None, tag, self.ringrt_group)
        sender = [-1]

        def note_sender():
            sender[0] = self._members.index(work.result())
        return self._coalesced(DeferredWork([work], tensors, note_sender, sender))

    # -- coalescing and lifetime ----------------------------------------------------------

    def _start_coalescing(self, device=None) -> None:
        self._coalescing = []

    def _coalesced(self, work: RingrtWork) -> RingrtWork:
        if self._coalescing is not None:
            self._coalescing.append(work)
        return work

    def _end_coalescing(self, device=None) -> RingrtWork:
        """One Work for every op started since :meth:`_start_coalescing` (deferred: a
        ``batch_isend_irecv`` is waited for at once, its receives complete on that thread)."""
        works, self._coalescing = self._coalescing or [], None
        ringrt_works = [w for work in works for w in work._ringrt_works]

        def settle_each():
            for work in works:
                work.wait()
        return DeferredWork(ringrt_works, after=settle_each,
                            value_of=lambda: [work.get_future() for work in works])

    def shutdown(self) -> None:
        if self._on_shutdown is not None:
            callback, self._on_shutdown = self._on_shutdown, None
            callback()

    def abort(self) -> None:
        self.shutdown()


_TORCH_API = "torch.distributed.distributed_c10d"


def _cores_per_local_rank() -> float:
    """Cores this process may use over the ranks on this host (LOCAL_WORLD_SIZE, which
    ringrun and torchrun set)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                       # not Linux
        cores = os.cpu_count() or 1
    return cores / max(1, local_world_size())


def _single_list(lists):
    """The one inner list of torch's list-of-lists arguments (``[]`` off the root)."""
    if isinstance(lists, (list, tuple)) and len(lists) == 1:
        return lists[0]
    return lists


def _scaled(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    return tensor if factor == 1.0 else tensor.detach() * factor


def _row_views(array, tensor: torch.Tensor, rows: list[int]) -> list:
    """Consecutive views of ``array`` holding ``rows[i]`` rows of ``tensor`` each."""
    per_row = tensor[0].numel() if tensor.dim() and tensor.shape[0] else 1
    views, offset = [], 0
    for count in rows:
        views.append(array[offset:offset + count * per_row])
        offset += count * per_row
    return views


def _after(work, action):
    """Run ``action`` after a ringrt op: now if it ran inline (``work`` None), else when its
    Work is done (before the Work's later callbacks, which complete torch's future)."""
    if work is None:
        action()
    else:
        work.add_done_callback(lambda done: done.exception() is None and action())
    return work
