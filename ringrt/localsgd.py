"""Local SGD and DiLoCo: replicas train apart and average what they learned every H steps.

Communication-efficient data parallelism for slow links (DiLoCo, Douillard et al. 2023,
arXiv 2311.08105; streaming DiLoCo, 2025). Each replica runs its inner optimizer on its own
data; every ``sync_every`` (H) inner steps the *pseudo-gradient* ``anchor - params`` (how far
the replica moved since the last sync) is averaged over the sync group and an outer Nesterov
SGD step moves the shared anchor; the replica continues from the new anchor::

    inner = Adam(model.params, lr=3e-3)
    diloco = DiLoCo(inner, sync_every=50)           # outer lr 0.7, momentum 0.9, Nesterov
    for x, y in loader:
        model.loss_and_grads(x, y, grads)
        diloco.step(grads)                          # inner step; every 50: outer step

:class:`LocalSGD` is the same with outer lr 1 and no momentum (the new anchor is the average
of the replicas' parameters).

Overlap (``delay``, default 1): the outer all_reduce started after step t runs while step
t + 1 computes and is applied after it, keeping step t + 1's local progress::

    params <- new_anchor + (params_now - params_at_t)

``delay=0`` waits at once (params <- new_anchor). What the delay costs is measured in
docs/local-sgd.md.

Error feedback (``error_feedback``, with ``compress``): each rank keeps what compression took
from its last pseudo-gradient of each element (its float pseudo-gradient minus what its
message carried) and adds it to the next one before compressing, as PowerSGD and 1-bit Adam
do, so nothing a rank learned is lost for good, only sent late. The residual differs per
rank: :meth:`DiLoCo.per_rank_state_dict` holds it and ``ringrt.checkpoint`` saves it for
every rank.

Fragments (``fragments=F``): the flat parameter vector is cut into F contiguous pieces; piece
f syncs at steps ``k * H / F`` with ``(k - 1) % F == f`` (k >= 1), so each piece syncs every H
steps, staggered, and each all_reduce carries 1/F of the bytes.

Two levels: :func:`sync_groups` splits the world by host (the layout the two-level collectives
use): DDP inside a host every step, DiLoCo across hosts. The replicas of one host are
identical, so the cross-host traffic is split among them: with L ranks on every host, local
index i averages share i of each fragment among the ranks with index i on every host, and an
all-gather inside the host (shared memory) reassembles the average; with uneven hosts, the
first rank of each host averages everything and broadcasts it inside its host.
``ringrt.ddp.DistributedDataParallel(..., sync_every=H)`` does it in one option.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

import ringrt as dist
from ringrt._compress import _Pending, start_average
from ringrt._flat import FlatLayout

__all__ = ["DiLoCo", "LocalSGD", "SyncGroups", "sync_groups", "SCOPES", "COMPRESSIONS"]

SCOPES = ("auto", "hosts", "ranks")
COMPRESSIONS = (None, "bf16", "int8")


class SyncGroups(NamedTuple):
    """This rank's two levels (what :func:`sync_groups` returns).

    Attributes:
        inner: the ranks that average gradients every step (this rank's host; or itself).
        outer: the group this rank averages pseudo-gradients over (None: it sends nothing
            across hosts; a host whose ranks are uneven with other hosts' uses its first rank).
        host: the group the cross-host result is shared in (= inner), None with one rank.
        shares: True: each rank of a host carries its share (local index i of L) across
            hosts, then an all-gather inside the host; False: one rank carries everything
            and broadcasts it inside the host (or the host has one rank).
    """

    inner: Any
    outer: Any
    host: Any
    shares: bool


def sync_groups(scope: str = "auto") -> SyncGroups:
    """The two levels of the world for this rank.

    Every rank must call it, in the same order (it creates process groups).

    Args:
        scope: ``"hosts"``: inner = the ranks on this rank's host (synchronous DDP over shared
            memory), outer = the ranks with this rank's local index on every host (DiLoCo
            across the links). ``"ranks"``: inner = this rank alone, outer = every rank
            (DiLoCo between all ranks; what a one-host job uses to run DiLoCo at all).
            ``"auto"``: ``"hosts"`` when the world spans several hosts, else ``"ranks"``.

    Returns:
        A :class:`SyncGroups`.

    Raises:
        ValueError: an unknown scope.
    """
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r} on rank {_rank()}")
    world = dist.distributed.resolve(None, "sync_groups")
    where = world.layout
    if scope == "auto":
        scope = "hosts" if len(where.hosts) > 1 else "ranks"
    if scope == "ranks":
        inner = _my_group([[r] for r in range(world.size)], world)
        return SyncGroups(inner, _my_group([list(range(world.size))], world), None, False)
    inner = _my_group([list(ranks) for ranks in where.hosts], world)
    host = inner if len(where.local_ranks(world.rank)) > 1 else None
    if where.even:          # local index i of every host: share i
        outer = _my_group([[ranks[i] for ranks in where.hosts]
                           for i in range(where.sizes[0])], world)
        return SyncGroups(inner, outer, host, host is not None)
    outer = _my_group([where.leaders()], world)      # uneven hosts: the first rank of each
    return SyncGroups(inner, outer if world.rank in where.leaders() else None, host, False)


def _my_group(rank_sets: list[list[int]], world):
    """Create a group per set (every rank, same order) and return the one holding this rank
    (None if none does)."""
    mine = None
    for ranks in rank_sets:
        group = dist.new_group([world.members[r] for r in ranks])
        if world.rank in ranks:
            mine = group
    return mine


@dataclass
class _InFlight:
    """A fragment's outer all_reduce, started after step ``started``."""

    fragment: int
    started: int
    snapshot: np.ndarray         # the fragment's parameters when it was sent
    pending: object = None       # _compress._Pending, or None once ``average`` is known
    average: np.ndarray | None = None

    def result(self) -> np.ndarray:
        if self.average is None:
            self.average, self.pending = self.pending.finish(), None
        return self.average


class DiLoCo:
    """Wrap an inner :mod:`ringrt.optim` optimizer with DiLoCo's outer step.

    Args:
        optimizer: the inner optimizer; its ``params`` (one floating dtype, C-contiguous) are
            the replica's parameters, updated in place.
        sync_every: H, inner steps between two syncs of each parameter.
        outer_lr: outer learning rate (DiLoCo: 0.7).
        outer_momentum: outer momentum (DiLoCo: 0.9).
        nesterov: Nesterov momentum (torch.optim.SGD's formula).
        fragments: F, pieces synced in turn every H / F steps (must divide H).
        delay: steps between starting a sync and applying it (0 .. H / F); 1 overlaps the
            all_reduce with the next inner step.
        compress: pseudo-gradients sent as None (float32), ``"bf16"`` or ``"int8"`` (one
            float32 scale per ``int8_chunk`` elements).
        int8_chunk: elements per int8 scale.
        error_feedback: with ``compress``: add what compression left out of this rank's
            last pseudo-gradient to its next one (see the module docstring). None: the
            class default (:attr:`default_error_feedback`) when compressing, else off.
        group: the sync group (default: the world); every member must wrap the same model.
            None on a rank that sends nothing across hosts (see :class:`SyncGroups`).
        host_group: two levels: the group of this rank's host, whose ranks hold identical
            replicas and share the result (None: one replica per rank).
        shares: with ``host_group``: each rank of the host carries its share across hosts
            (True) or the host's first rank carries everything (False).

    Attributes:
        optimizer, params, steps (inner steps taken), anchor (flat float copy of the
            parameters at each fragment's last sync), momentum (the outer momentum buffer),
            residual (with error feedback: this rank's, flat like the anchor; else None).

    Raises:
        ValueError: a bad option (message names it and the fix).
    """

    default_outer_lr, default_outer_momentum, default_nesterov = 0.7, 0.9, True
    default_error_feedback = False

    def __init__(self, optimizer, sync_every: int, *, outer_lr: float | None = None,
                 outer_momentum: float | None = None, nesterov: bool | None = None,
                 fragments: int = 1, delay: int = 1, compress: str | None = None,
                 int8_chunk: int = 256, error_feedback: bool | None = None, group=None,
                 host_group=None, shares: bool = False):
        self.outer_lr = self.default_outer_lr if outer_lr is None else outer_lr
        self.outer_momentum = (self.default_outer_momentum if outer_momentum is None
                               else outer_momentum)
        self.nesterov = self.default_nesterov if nesterov is None else nesterov
        _check_options(sync_every, fragments, delay, compress, self.outer_lr,
                       self.outer_momentum, int8_chunk)
        self.error_feedback = _error_feedback(error_feedback, compress,
                                              self.default_error_feedback)
        self.optimizer, self.params = optimizer, optimizer.params
        self.sync_every, self.fragments, self.delay = sync_every, fragments, delay
        self.compress, self.int8_chunk, self.group = compress, int8_chunk, group
        self.across = _Across(group, host_group, shares, compress, int8_chunk)
        self.period = sync_every // fragments
        self.layout = FlatLayout.of(self.params)
        self.anchor = self.layout.flatten(self.params)
        self.across.broadcast(self.anchor)
        self.layout.unflatten_into(self.anchor, self.params)    # every replica starts equal
        self.momentum = np.zeros_like(self.anchor)
        self.residual = np.zeros_like(self.anchor) if self.error_feedback else None
        bounds = np.linspace(0, self.layout.numel, fragments + 1).round().astype(int)
        self.bounds = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.steps = 0
        self._in_flight: _InFlight | None = None

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """One inner step with ``grads``; then apply a sync that is due, start one that is."""
        self.optimizer.step(grads)
        self.steps += 1
        if self._in_flight is not None and self.steps >= self._in_flight.started + self.delay:
            self._apply()
        if self.steps % self.period == 0:
            self._start((self.steps // self.period - 1) % self.fragments)
            if self.delay == 0:
                self._apply()

    def _start(self, fragment: int) -> None:
        lo, hi = self.bounds[fragment]
        snapshot = np.empty(hi - lo, self.layout.dtype)
        self.layout.copy_range_from(self.params, snapshot, lo, hi)
        pseudo_grad = self.anchor[lo:hi] - snapshot
        residual = None if self.residual is None else self.residual[lo:hi]
        pending = self.across.start(pseudo_grad, self.compress, residual)
        self._in_flight = _InFlight(fragment, self.steps, snapshot, pending)

    def _apply(self) -> None:
        flight, self._in_flight = self._in_flight, None
        lo, hi = self.bounds[flight.fragment]
        average = flight.result().astype(self.anchor.dtype, copy=False)
        buf = self.momentum[lo:hi]
        buf *= self.outer_momentum
        buf += average
        update = average + self.outer_momentum * buf if self.nesterov else buf
        self.anchor[lo:hi] -= self.outer_lr * update
        fresh = self.anchor[lo:hi]
        if self.steps > flight.started:       # keep the local progress made meanwhile
            now = np.empty(hi - lo, self.layout.dtype)
            self.layout.copy_range_from(self.params, now, lo, hi)
            fresh = fresh + (now - flight.snapshot)
        _write_range(self.layout, self.params, fresh, lo, hi)

    def consolidate(self) -> None:
        """Make every replica identical: apply the sync in flight, average the parameters
        and the inner optimizer's floating state over the group, reset every anchor.

        Every member must call it at the same step. Call it before a checkpoint written by
        one rank (``ringrt.checkpoint.save`` with this object as the optimizer) and at
        elastic membership changes; it costs one all_reduce of the parameters (and of the
        inner state). Error-feedback residuals stay as they are: they are per rank (what
        each rank still owes the others), and checkpoints save every rank's.
        """
        if self._in_flight is not None:
            self._apply()
        flat = self.across.start(self.layout.flatten(self.params), None).finish()
        self.layout.unflatten_into(flat, self.params)
        self.anchor[...] = flat
        state = self.optimizer.state_dict()
        _average_tree(state, self.across)
        self.optimizer.load_state_dict(state)

    def state_dict(self) -> dict:
        """This replica's state: the inner optimizer's and the outer one's (anchor, momentum,
        steps, options, and the sync in flight, waited for, as its averaged result), and
        under ``"per_rank"`` this rank's own (:meth:`per_rank_state_dict`)."""
        flight = self._in_flight
        outer = {"steps": self.steps, "anchor": self.anchor.copy(),
                 "momentum": self.momentum.copy(), "options": self._options(),
                 "in_flight": None}
        if flight is not None:
            outer["in_flight"] = {"fragment": flight.fragment, "started": flight.started,
                                  "snapshot": flight.snapshot.copy(),
                                  "average": flight.result().copy()}
        return {"inner": self.optimizer.state_dict(), "outer": outer,
                "per_rank": self.per_rank_state_dict()}

    def per_rank_state_dict(self) -> dict:
        """This rank's own state: the error-feedback residual with the options that shape it
        (``{}`` without error feedback). It differs per rank, so ``ringrt.checkpoint``
        writes every rank's (the rest of :meth:`state_dict` only from rank 0)."""
        if self.residual is None:
            return {}
        return {"options": self._per_rank_options(), "residual": self.residual.copy()}

    def load_per_rank_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`per_rank_state_dict`'s state; ``{}`` restarts it (zero residual).

        Raises:
            ValueError: the state was saved with other options or another size.
        """
        if self.residual is None:
            if state:
                raise ValueError(f"{type(self).__name__}.load_per_rank_state_dict on rank "
                                 f"{_rank()}: the state holds an error-feedback residual, "
                                 "this object has no error feedback; build it with "
                                 "error_feedback=True")
            return
        if not state:
            self.residual[...] = 0
            return
        saved = dict(state["options"])
        if saved != self._per_rank_options():
            raise ValueError(f"{type(self).__name__}.load_per_rank_state_dict on rank "
                             f"{_rank()}: saved with {saved}, this object has "
                             f"{self._per_rank_options()}; build it with the saved options")
        np.copyto(self.residual, state["residual"])

    def _per_rank_options(self) -> dict | None:
        """What shapes the per-rank state (None: this object keeps none)."""
        if self.residual is None:
            return None
        return {"compress": self.compress, "int8_chunk": self.int8_chunk,
                "elements": int(self.residual.size)}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`'s state (the options must match this object's). A
        state without ``"per_rank"`` (rank 0's, as ``ringrt.checkpoint`` keeps it) restarts
        the per-rank state.

        Raises:
            ValueError: the saved options or sizes differ from this object's.
        """
        outer = state["outer"]
        saved = dict(outer["options"])
        saved.setdefault("error_feedback", False)       # saved before the option existed
        if saved != self._options():
            raise ValueError(f"{type(self).__name__}.load_state_dict: saved with options "
                             f"{saved}, this object has {self._options()}; build it with the "
                             "saved options")
        if np.shape(outer["anchor"]) != self.anchor.shape:
            raise ValueError(f"{type(self).__name__}.load_state_dict: anchor of "
                             f"{np.size(outer['anchor'])} elements, parameters have "
                             f"{self.anchor.size}")
        self.optimizer.load_state_dict(state["inner"])
        self.steps = int(outer["steps"])
        np.copyto(self.anchor, outer["anchor"])
        np.copyto(self.momentum, outer["momentum"])
        flight = outer.get("in_flight")
        self._in_flight = None if flight is None else _InFlight(
            int(flight["fragment"]), int(flight["started"]),
            np.array(flight["snapshot"], self.layout.dtype),
            average=np.array(flight["average"], np.float32))
        self.load_per_rank_state_dict(state.get("per_rank") or {})

    def _options(self) -> dict:
        return {"sync_every": self.sync_every, "fragments": self.fragments,
                "delay": self.delay, "compress": self.compress or "none",
                "outer_lr": float(self.outer_lr),
                "outer_momentum": float(self.outer_momentum), "nesterov": bool(self.nesterov),
                "error_feedback": self.error_feedback}

    @property
    def lr(self) -> float:
        """The inner optimizer's learning rate (settable, for schedules)."""
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value


class LocalSGD(DiLoCo):
    """Local SGD: :class:`DiLoCo` with outer lr 1 and no momentum, so every sync sets each
    replica to the average of the replicas' parameters. Same arguments as DiLoCo."""

    default_outer_lr, default_outer_momentum, default_nesterov = 1.0, 0.0, False


def _check_options(sync_every, fragments, delay, compress, outer_lr, outer_momentum,
                   int8_chunk) -> None:
    where = f"DiLoCo on rank {_rank()}"
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"{where}: sync_every (H) must be an integer >= 1, got "
                         f"{sync_every!r}")
    if isinstance(fragments, bool) or not isinstance(fragments, int) or fragments < 1 \
            or sync_every % fragments:
        raise ValueError(f"{where}: fragments must be an integer >= 1 dividing sync_every "
                         f"{sync_every}, got {fragments!r}; pick a divisor of H")
    period = sync_every // fragments
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= period:
        raise ValueError(f"{where}: delay must be an integer in 0..{period} (H / fragments), "
                         f"got {delay!r}")
    if compress not in COMPRESSIONS:
        raise ValueError(f"{where}: compress must be one of {COMPRESSIONS}, got {compress!r}")
    if not outer_lr > 0:
        raise ValueError(f"{where}: outer_lr must be > 0, got {outer_lr!r}")
    if not 0 <= outer_momentum < 1:
        raise ValueError(f"{where}: outer_momentum must be in [0, 1), got {outer_momentum!r}")
    if not isinstance(int8_chunk, int) or int8_chunk < 1:
        raise ValueError(f"{where}: int8_chunk must be an integer >= 1, got {int8_chunk!r}")


def _error_feedback(error_feedback, compress, default: bool) -> bool:
    where = f"DiLoCo on rank {_rank()}"
    if error_feedback is None:
        return bool(default and compress)
    if not isinstance(error_feedback, bool):
        raise ValueError(f"{where}: error_feedback must be True, False or None (the "
                         f"default), got {error_feedback!r}")
    if error_feedback and compress is None:
        raise ValueError(f"{where}: error_feedback=True needs compress='bf16' or 'int8' "
                         "(uncompressed pseudo-gradients lose nothing to feed back)")
    return error_feedback


def _rank() -> int | str:
    """This rank, for messages ("?" before init_process_group)."""
    return dist.get_rank() if dist.is_initialized() else "?"


class _Across:
    """Averages a replica's vector over the replicas (see the module docstring's two levels):
    over ``group`` directly; by shares (an all-gather in ``host`` after); or by the host's
    first rank (``group`` None elsewhere) and a broadcast in ``host``."""

    def __init__(self, group, host, shares: bool, compress, chunk: int):
        self.group, self.host, self.compress, self.chunk = group, host, compress, chunk
        self.mode = "flat" if host is None else "shares" if shares else "leader"
        if self.mode == "flat" and group is None:       # one level: the default group
            self.group = dist.distributed.resolve(None, "DiLoCo")
        self.host_size = 1 if host is None else dist.get_world_size(host)
        self.host_index = 0 if host is None else dist.get_rank(host)

    def broadcast(self, values: np.ndarray) -> None:
        """Give every replica the first one's ``values`` (in place)."""
        if self.group is not None:
            dist.broadcast(values, src=_first_member(self.group), group=self.group)
        if self.host is not None:
            dist.broadcast(values, src=_first_member(self.host), group=self.host)

    def start(self, values: np.ndarray, compress, residual: np.ndarray | None = None
              ) -> _Pending:
        """Launch the average of ``values`` over the replicas; ``finish()`` returns it.

        With ``residual`` (error feedback, ``values``' size) this rank sends ``values +
        residual`` and leaves in ``residual`` what compression took from what it sent (zero
        where it sends nothing: another rank of its host carries that part).
        """
        if residual is not None:
            values = values + residual
        if self.mode == "flat":
            return start_average(values, compress, self.group, self.chunk, residual)
        dtype = values.dtype if compress is None else np.dtype(np.float32)
        if self.mode == "leader":
            if self.group is None and residual is not None:
                residual[...] = 0
            pending = None if self.group is None else \
                start_average(values, compress, self.group, self.chunk, residual)
            return _Pending([], lambda: self._from_leader(pending, values.size, dtype))
        share = -(-values.size // self.host_size)
        mine = np.zeros(share, values.dtype)
        where = slice(self.host_index * share, (self.host_index + 1) * share)
        piece = values[where]
        mine[:piece.size] = piece
        lost = None if residual is None else np.zeros(share, values.dtype)
        pending = start_average(mine, compress, self.group, self.chunk, lost)
        if residual is not None:
            residual[...] = 0
            residual[where] = lost[:piece.size]
        return _Pending([], lambda: self._gathered(pending, values.size, dtype))

    def _from_leader(self, pending, size: int, dtype) -> np.ndarray:
        average = np.empty(size, dtype) if pending is None else pending.finish().astype(dtype)
        dist.broadcast(average, src=_first_member(self.host), group=self.host)
        return average

    def _gathered(self, pending, size: int, dtype) -> np.ndarray:
        mine = pending.finish().astype(dtype, copy=False)
        everything = np.empty(mine.size * self.host_size, dtype)
        dist.all_gather_into_tensor(everything, mine, group=self.host)
        return everything[:size]


def _first_member(group) -> int:
    return dist.distributed.resolve(group, "DiLoCo").members[0]


def _write_range(layout: FlatLayout, params, values: np.ndarray, lo: int, hi: int) -> None:
    """Write ``values`` (elements lo..hi of the flattened parameters) into ``params``."""
    for name in layout.names:
        begin, end = layout.span(name)
        a, b = max(begin, lo), min(end, hi)
        if a < b:
            flat = params[name].reshape(-1)
            if not np.shares_memory(flat, params[name]):
                raise ValueError(f"DiLoCo: parameter {name!r} is not contiguous; pass "
                                 "C-contiguous arrays")
            flat[a - begin:b - begin] = values[a - lo:b - lo]


def _average_tree(tree, across: _Across) -> None:
    """Average every floating ndarray leaf of a dict/list tree over the replicas, in place,
    in a fixed order (sorted keys), so every rank issues the same collectives."""
    if isinstance(tree, Mapping):
        for key in sorted(tree, key=str):
            _average_tree(tree[key], across)
    elif isinstance(tree, list | tuple):
        for item in tree:
            _average_tree(item, across)
    elif isinstance(tree, np.ndarray) and np.issubdtype(tree.dtype, np.floating) and tree.size:
        tree[...] = across.start(tree.reshape(-1), None).finish().reshape(tree.shape)
