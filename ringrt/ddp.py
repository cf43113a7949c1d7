"""Data parallel training: average gradients over ranks in buckets, overlapping the backward.

Every rank holds a full replica of the parameters, computes gradients on its own share of the
batch, and :class:`DistributedDataParallel` averages them so every replica takes the same step::

    ddp = DistributedDataParallel(model.params)     # copies in, broadcasts from rank 0
    model.params = ddp.params                      # use ddp's views from now on
    optimizer = Adam(ddp.params)
    for x, y in loader:
        # the backward writes each gradient in place and marks it final as soon as it is
        model.loss_and_grads(x, y, ddp.grads, on_layer_done=ddp.grad_ready)
        ddp.sync()                                  # ddp.grads now hold the average
        optimizer.step(ddp.grads)

(``examples/mlp.py`` has such a model; ``examples/train.py`` is the whole loop.)

Layout (as in torch's DDP reducer): the parameters and the gradients each live in one flat
buffer, laid out in REVERSE registration order, the order a backward pass produces gradients.
Buckets are contiguous slices of the gradient buffer of about ``bucket_cap_mb``; once every
gradient of a bucket is marked with :meth:`grad_ready`, its ``all_reduce`` starts
asynchronously while the backward continues. Buckets are always launched in bucket order,
so every rank issues the same collectives in the same order even if it marks gradients in a
different one.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import ringrt as dist
from ringrt import localsgd
from ringrt._comm.work import Work
from ringrt._compress import PowerSGD
from ringrt._flat import FlatLayout, check_float_params
from ringrt._process_group import ProcessGroup
from ringrt._observe import timeline

COMPRESSIONS = (None, "bf16", "powersgd")


class ViewDict(dict):
    """name -> view into one flat buffer (``ddp.params``, ``ddp.grads``): assigning writes
    into the view, so the buffer that is communicated always holds what you assigned.

    NumPy's in-place idioms work as written; Python runs ``d[k] -= v`` as
    ``d[k] = d[k].__isub__(v)``, and assigning an entry its own view is a no-op::

        ddp.params["w"] -= lr * ddp.grads["w"]    # in place
        ddp.grads["w"] += dw                      # in place
        ddp.grads["w"] = dw                       # copied into the view (shape must match)
        ddp.grads["w"] = 0                        # a scalar fills it

    Attributes:
        owner: the :class:`DistributedDataParallel` whose buffer the views are in (None for
            one built directly); ``ringrt.checkpoint`` saves and restores its state along
            with ``ddp.params``.

    Raises:
        ValueError: the value's shape differs from the entry's.
        TypeError: the value's dtype does not cast to the buffer's ('same_kind'), or an
            entry is deleted.
        KeyError: the name is not registered (entries cannot be added).
    """

    def __init__(self, views=(), label: str = "views", owner=None):
        super().__init__(views)
        self.label = label
        self._owner = None if owner is None else weakref.ref(owner)   # no cycle with it

    @property
    def owner(self):
        """The DDP these are the views of (None: built directly, or the DDP is gone)."""
        return None if self._owner is None else self._owner()

    def __setitem__(self, name, value):
        view = self.get(name)
        if view is None:
            raise KeyError(f"{self.label}[{name!r}]: no such parameter (registered: "
                           f"{list(self)}); entries of a flat buffer cannot be added")
        if value is view:
            return                     # d[k] op= v: the view was already updated in place
        value = np.asarray(value)
        if value.ndim and value.shape != view.shape:
            raise ValueError(f"{self.label}[{name!r}] has shape {view.shape}; cannot assign "
                             f"an array of shape {value.shape} (the entry is a view into a "
                             "flat buffer: values are copied in, shapes must match)")
        try:
            np.copyto(view, value, casting="same_kind")
        except TypeError:
            raise TypeError(f"{self.label}[{name!r}] is {view.dtype}; cannot assign "
                            f"{value.dtype} values to it (cast them first)") from None

    def __delitem__(self, name):
        raise TypeError(f"cannot delete {self.label}[{name!r}]: the entries are views into "
                        "one flat buffer")

    def update(self, *args, **kwargs):
        """Assign each entry as ``self[name] = value`` does (copying into the views)."""
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def __ior__(self, other):  # type: ignore[misc]  # like dict's |=: any mapping
        self.update(other)
        return self

    def setdefault(self, name, default=None):
        """The entry's view (entries cannot be added)."""
        if name not in self:
            self[name] = default          # raises KeyError naming the registered entries
        return self[name]

    def _no_removal(self, *args):
        raise TypeError(f"cannot remove entries of {self.label}: they are views into one flat "
                        "buffer")

    pop = popitem = clear = _no_removal

    def __reduce__(self):
        return dict, (dict(self),)       # copies (copy, deepcopy) are plain dicts


@dataclass
class _Bucket:
    index: int
    start: int                 # element range in the flat gradient buffer
    stop: int
    names: frozenset[str]
    pending: int = 0           # gradients not yet marked ready this iteration
    work: Work | None = None   # the in-flight all_reduce's Work
    ready_at: float = 0.0      # when its last gradient was marked (only while tracing)


def plan_buckets(layout: FlatLayout, cap_bytes: int) -> list[tuple[int, int, list[str]]]:
    """Split the layout (in buffer order) into contiguous ``(start, stop, names)`` buckets.

    A bucket closes once it holds at least ``cap_bytes``; a parameter is never split, so a
    parameter larger than the cap gets a bucket of its own.
    """
    buckets, names, start = [], [], 0
    for name in layout.names:
        names.append(name)
        stop = layout.span(name)[1]
        if (stop - start) * layout.dtype.itemsize >= cap_bytes:
            buckets.append((start, stop, names))
            names, start = [], stop
    if names:
        buckets.append((start, layout.numel, names))
    return buckets


class DistributedDataParallel:
    """Replicated parameters with bucketed, overlapped gradient averaging.

    Args:
        params: name -> floating ndarray, all of one dtype, in registration (forward) order.
            The arrays are COPIED into a flat buffer: use :attr:`params` afterwards (the
            caller's arrays are left as they were and no longer updated by anything here).
        bucket_cap_mb: target bucket size in MiB (torch's default, 25).
        group: process group (default: the global group).
        broadcast_from: rank whose parameters every replica starts from.
        compress: ``None``, ``"bf16"`` or ``"powersgd"``: how gradients cross hosts. When
            the world spans hosts (``group`` None), buckets are averaged in float32 inside
            each host (shared memory, overlapped with the backward) and :meth:`sync` then
            averages the host averages across hosts, compressed (bf16: each rank of a host
            carries 1/L of it; PowerSGD: each host's first rank, then a broadcast inside the
            host). On one host (or with an explicit ``group``) there is no host stage:
            :meth:`sync` averages the whole gradient compressed over the group (so it can be
            tested there). See docs/local-sgd.md.
        powersgd_rank: PowerSGD's rank r.
        sync_every: switch on two-level DiLoCo: DDP only among the ranks of a host
            (:func:`ringrt.localsgd.sync_groups` with ``scope``), and :meth:`wrap_optimizer`
            wraps the optimizer in :class:`ringrt.localsgd.DiLoCo` syncing every
            ``sync_every`` steps across hosts. Needs ``group=None``; excludes ``compress``.
        scope: with ``sync_every``: ``"auto"`` (hosts when the world spans hosts, else ranks),
            ``"hosts"`` or ``"ranks"`` (DiLoCo between all ranks, no DDP).

    Attributes:
        params: name -> view into the flat parameter buffer (same order as given); a
            :class:`ViewDict`: ``ddp.params[k] -= lr * ddp.grads[k]`` and assignments write
            into the buffer.
        grads: name -> view into the flat gradient buffer; ``ddp.grads[k] += g``,
            ``ddp.grads[k] = g`` (copied in, same shape) or a backward pass writing in place.
        levels: with ``sync_every``, the :class:`ringrt.localsgd.SyncGroups` in use.

    Raises:
        TypeError: params are not floating ndarrays of one dtype. ValueError: empty params,
            a non-positive bucket_cap_mb, an unknown compress, a bad sync_every or scope.
    """

    def __init__(self, params: Mapping[str, np.ndarray], bucket_cap_mb: float = 25,
                 group: ProcessGroup | None = None, broadcast_from: int = 0, *,
                 compress: str | None = None, powersgd_rank: int = 4,
                 sync_every: int | None = None, scope: str = "auto") -> None:
        check_float_params(params, "DistributedDataParallel", writable=False)
        if bucket_cap_mb <= 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got "
                             f"{bucket_cap_mb}")
        _check_two_level(compress, sync_every, scope, group)
        self.sync_every, self.compress = sync_every, compress
        self.levels: localsgd.SyncGroups | None = None
        self._cross: Any = None
        self._skip_buckets, start_group = False, group
        if sync_every is not None:
            self.levels = localsgd.sync_groups(scope)
            group, broadcast_from = self.levels.inner, self.levels.inner.members[0]
            start_group = group                     # DiLoCo broadcasts across hosts
            # one rank per replica: nothing to average, and an op here would queue behind
            # DiLoCo's cross-host all_reduce (one executor runs every op in call order)
            self._skip_buckets = self.levels.inner.size == 1
        if compress is not None:
            group, self._cross, self._skip_buckets = _compression_levels(group)
        self.group = group
        self.layout = FlatLayout.of(params, order=reversed(list(params)))
        self.flat_params = self.layout.flatten(params, what="params")
        self.flat_grads = self.layout.empty()
        self.params = _view_dict(self.layout.views(self.flat_params), params, "ddp.params", self)
        self.grads = _view_dict(self.layout.views(self.flat_grads), params, "ddp.grads", self)
        cap_bytes = int(bucket_cap_mb * 2**20)
        self.buckets = [_Bucket(i, start, stop, frozenset(names))
                        for i, (start, stop, names) in enumerate(plan_buckets(self.layout,
                                                                              cap_bytes))]
        self._bucket_of = {name: b for b in self.buckets for name in b.names}
        self._ready: set[str] = set()
        self._next_launch = 0          # buckets launch strictly in index order
        self._accumulating = False
        self._compressor = None
        if compress == "powersgd":
            self._compressor = PowerSGD(self.layout, powersgd_rank)
        dist.broadcast(self.flat_params, src=broadcast_from, group=start_group)
        self._reset_iteration()

    def wrap_optimizer(self, optimizer, **options):
        """The optimizer to step: ``optimizer`` itself, or with ``sync_every`` a
        :class:`ringrt.localsgd.DiLoCo` around it syncing across hosts (``options`` are
        DiLoCo's keyword arguments: outer_lr, outer_momentum, fragments, delay, compress,
        error_feedback)."""
        if self.sync_every is None:
            if options:
                raise ValueError(f"wrap_optimizer: DiLoCo options {sorted(options)} need "
                                 "DistributedDataParallel(..., sync_every=H)")
            return optimizer
        assert self.levels is not None          # set with sync_every
        return localsgd.DiLoCo(optimizer, self.sync_every, group=self.levels.outer,
                               host_group=self.levels.host, shares=self.levels.shares,
                               **options)

    def grad_ready(self, name: str) -> None:
        """Mark ``grads[name]`` final for this iteration; may start its bucket's all-reduce.

        Inside :meth:`no_sync` it only checks the name (micro-steps may mark a gradient
        once each).

        Raises:
            KeyError: unknown name. RuntimeError: the gradient was already marked this
                iteration (call :meth:`sync` between iterations).
        """
        bucket = self._bucket_of.get(name)
        if bucket is None:
            raise KeyError(f"grad_ready: unknown parameter {name!r}; registered: "
                           f"{list(self.params)}")
        if self._accumulating:
            return                      # no_sync(): one micro-step of many, nothing to send
        if name in self._ready:
            raise RuntimeError(
                f"grad_ready({name!r}) called twice in one iteration; call ddp.sync() (or "
                "leave no_sync()) before marking gradients of the next backward pass"
            )
        self._ready.add(name)
        bucket.pending -= 1
        if not bucket.pending and timeline.active is not None:
            bucket.ready_at = time.perf_counter()
        self._launch_ready_buckets()

    def sync(self) -> None:
        """Reduce every bucket not yet launched, wait for all; ``grads`` hold the average.

        Gradients never marked with :meth:`grad_ready` are treated as final now. Inside
        :meth:`no_sync` this only ends the micro-step: nothing is sent, the gradients stay
        local and keep accumulating, and the first ``sync()`` after it averages the sum.
        """
        if not self._accumulating:
            for bucket in self.buckets[self._next_launch:]:
                self._launch(bucket)
            with timeline.span("ddp.sync (waiting for buckets)", "ddp"):
                for bucket in self.buckets:
                    assert bucket.work is not None      # every bucket was launched above
                    bucket.work.wait()
            if self.compress is not None:
                self._average_compressed()
        self._reset_iteration()

    def _average_compressed(self) -> None:
        """bf16: by shares across hosts (each rank of a host carries 1/L, an all-gather in
        the host reassembles); PowerSGD: the host's first rank compresses among the hosts'
        first ranks and broadcasts the result in its host."""
        cross = self._cross
        with timeline.span(f"ddp.sync ({self.compress} across hosts)", "ddp"):
            if self._compressor is None:
                self.flat_grads[...] = cross.start(self.flat_grads, "bf16").finish()
                return
            if cross.host_index == 0:
                self._compressor.average(self.flat_grads, cross.group)
            if cross.host is not None:
                dist.broadcast(self.flat_grads, src=cross.host.members[0], group=cross.host)

    def state_dict(self) -> dict:
        """This rank's gradient-compression state: PowerSGD's error-feedback residuals (they
        differ per rank) and warm-start Qs, with the options that made them; ``{}`` when
        there is none (no compression, or bf16, which keeps no state).

        ``ringrt.checkpoint.save(directory, ddp.params, optimizer)`` writes it for every rank
        and ``ringrt.checkpoint.load(directory, ddp.params, optimizer)`` restores it, so a
        resumed PowerSGD run continues bit for bit.
        """
        if self._compressor is None:
            return {}
        return {"options": self._compression_options(), **self._compressor.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s state. An empty ``state`` restarts PowerSGD's
        (zero residuals, the initial Qs), as a new object starts.

        Raises:
            ValueError: the state was saved with other compression options, or for other
                parameters.
        """
        saved = dict(state.get("options") or {}) if state else None
        if state and saved != self._compression_options():
            raise ValueError(f"DistributedDataParallel.load_state_dict on rank "
                             f"{localsgd._rank()}: state saved with {saved}, this object has "
                             f"{self._compression_options()}; build it with the saved options")
        if state:
            assert self._compressor is not None     # the options matched: PowerSGD is on
            self._compressor.load_state_dict(state)
        elif self._compressor is not None:
            self._compressor = PowerSGD(self.layout, self._compressor.rank)

    def _compression_options(self) -> dict | None:
        """The options that shape :meth:`state_dict` (None: this object keeps no state)."""
        if self._compressor is None:
            return None
        return {"compress": self.compress, "powersgd_rank": self._compressor.rank}

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Gradient accumulation: no communication inside; the next ``sync()`` reduces all.

        Raises:
            RuntimeError: gradients of this iteration were already marked ready.
        """
        if self._ready:
            raise RuntimeError("no_sync() entered halfway through an iteration (gradients "
                               "already marked ready); call ddp.sync() first")
        previous, self._accumulating = self._accumulating, True
        try:
            yield
        finally:
            self._accumulating = previous

    def zero_grad(self) -> None:
        """Set every gradient to zero (one fill of the flat buffer).

        Raises:
            RuntimeError: buckets are in flight (their all-reduce still writes the buffer).
        """
        if self._next_launch:
            raise RuntimeError("zero_grad() with gradients in flight; call ddp.sync() first")
        self.flat_grads.fill(0)
        self._reset_iteration()

    def _launch_ready_buckets(self) -> None:
        while self._next_launch < len(self.buckets) and not self.buckets[self._next_launch].pending:
            self._launch(self.buckets[self._next_launch])

    def _launch(self, bucket: _Bucket) -> None:
        grads = self.flat_grads[bucket.start:bucket.stop]
        if self._skip_buckets:     # compressed over the whole group in sync(), or one rank
            bucket.work, self._next_launch = _NOTHING_SENT, bucket.index + 1
            return
        bucket.work = dist.all_reduce(grads, op=dist.ReduceOp.AVG, group=self.group,
                                      async_op=True)
        self._next_launch = bucket.index + 1
        if timeline.active is not None:
            _trace_bucket(timeline.active, bucket, grads.nbytes)

    def _reset_iteration(self) -> None:
        self._ready.clear()
        self._next_launch = 0
        for bucket in self.buckets:
            bucket.pending, bucket.work, bucket.ready_at = len(bucket.names), None, 0.0


_NOTHING_SENT = dist.Work.finished("ddp bucket (nothing sent: one rank, or compressed in sync)")


def _check_two_level(compress, sync_every, scope, group) -> None:
    where = f"DistributedDataParallel on rank {localsgd._rank()}"
    if compress not in COMPRESSIONS:
        raise ValueError(f"{where}: compress must be one of {COMPRESSIONS}, got {compress!r}")
    if sync_every is None:
        return
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"{where}: sync_every must be an integer >= 1, got {sync_every!r}")
    if scope not in localsgd.SCOPES:
        raise ValueError(f"{where}: scope must be one of {localsgd.SCOPES}, got {scope!r}")
    if compress is not None:
        raise ValueError(f"{where}: compress={compress!r} is for synchronous DDP; with "
                         "sync_every pass compress to wrap_optimizer (bf16 or int8 "
                         "pseudo-gradients)")
    if group is not None:
        raise ValueError(f"{where}: sync_every builds its own groups (by host); pass "
                         "group=None")


def _compression_levels(group):
    """``(bucket_group, cross, skip_buckets)`` for compressed DDP: over the world spanning
    hosts, float32 buckets inside the host and compression across (``cross``, a
    ``localsgd._Across``); else compression over the whole group and no bucket stage."""
    world = dist.distributed._default_world("DistributedDataParallel")
    if group is None and len(world.layout.hosts) > 1:
        levels = localsgd.sync_groups("hosts")
        return levels.inner, localsgd._Across(levels.outer, levels.host, levels.shares, None,
                                              0), False
    group = dist.distributed.resolve(group, "DistributedDataParallel")
    return group, localsgd._Across(group, None, False, None, 0), True


def _trace_bucket(tracer, bucket: _Bucket, nbytes: int) -> None:
    """While tracing: the bucket's span, from its last gradient marked ready to its
    all-reduce done, on a row of its own (buckets overlap each other in time)."""
    launched = time.perf_counter()
    ready = bucket.ready_at or launched
    row = tracer.row(timeline.DDP_TID + bucket.index, f"DDP bucket {bucket.index} (ready -> reduced)")

    def reduced(work) -> None:
        done = time.perf_counter()
        tracer.span(f"bucket {bucket.index}", "ddp", ready, done, row,
                    {"bytes": nbytes, "grads": len(bucket.names),
                     "ready_to_launched_us": round((launched - ready) * 1e6, 1),
                     "launched_to_reduced_us": round((done - launched) * 1e6, 1),
                     "failed": work.exception() is not None})
    assert bucket.work is not None                  # called right after the launch
    bucket.work.add_done_callback(reduced)


def _view_dict(views: dict[str, np.ndarray], order: Mapping, label: str,
               owner: DistributedDataParallel) -> ViewDict:
    return ViewDict(((name, views[name]) for name in order), label, owner)
