"""DiLoCo (local SGD with an outer Nesterov step) for torch models, across slow links.

Each replica takes ``sync_every`` (H) steps of its own optimizer (any ``torch.optim``), then
the replicas average their *pseudo-gradients* (the last global parameters minus their own)
and apply them with an outer Nesterov SGD step (Douillard et al. 2023, arXiv 2311.08105; lr
0.7, momentum 0.9 as there). One all_reduce per H steps instead of one per step::

    import ringrt.torch
    from ringrt.torch.localsgd import DiLoCo

    dist.init_process_group("ringrt")
    inner = torch.optim.AdamW(model.parameters(), lr=1e-3)
    diloco = DiLoCo(model, inner, sync_every=50, two_level=True)
    for x, y in loader:
        inner.zero_grad()
        loss_fn(diloco.model(x), y).backward()   # diloco.model: DDP over the host's ranks
        diloco.step()                             # inner step; every H steps an outer one

Options (Streaming DiLoCo, Douillard et al. 2025):

* ``overlap`` (default on): the outer all_reduce runs while the next inner step computes,
  and its result is applied one step late: the parameters become the new global ones plus
  the one local step taken meanwhile. Off, the step waits for the all_reduce.
* ``fragments`` F: the parameters are cut into F fragments and one fragment is synced every
  H/F steps (each fragment every H steps), so the link carries 1/F of the model at a time.
* ``compress``: ``"bf16"`` (all_reduce in bfloat16, half the bytes) or ``"int8"`` (blocks of
  1024 values, each with its float32 scale, all-gathered: a quarter of the bytes per rank,
  summed in float32 in rank order).
* ``error_feedback`` (with ``compress``): each rank adds what compression left out of its
  last pseudo-gradient of a fragment (its float32 pseudo-gradient minus what its message
  carried) to the next one before compressing (as PowerSGD and 1-bit Adam do). The residual
  is per rank; ``state_dict()`` holds it.
* ``two_level``: ranks on one host train synchronously (torch DDP over a subgroup of the
  host's ranks, shared memory under "ringrt"), and hosts sync by DiLoCo across the slow
  links. The hosts come from ringrt's host layout (``ringrt._algorithms.layout``). The
  pseudo-gradient is the same on every rank of a host, so the first k ranks of each host
  (k: the fewest ranks any host has) each carry 1/k of it over their own cross-host group
  (same local index on every host) and broadcast their share to the host's other ranks.

``state_dict()`` / ``load_state_dict()`` hold the outer state (global parameters, outer
momentum, the step count and a pending pseudo-gradient) and this rank's error-feedback
residuals, so a run resumed from a checkpoint of the model, the inner optimizer and this
object continues as the uninterrupted one would. ``consolidate()`` makes the replicas
identical (at an outer-step boundary, before a checkpoint that one rank writes or an elastic
membership change).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ringrt._algorithms.layout import Layout
from ringrt.localsgd import COMPRESSIONS  # the same choices as ringrt's DiLoCo

INT8_BLOCK = 1024          # values per int8 scale: one outlier coarsens only its own block


@dataclass
class HostGroups:
    """torch process groups by host, for two-level training.

    Attributes:
        layout: the group's ranks by host (group ranks), from ringrt's host layout.
        local: the ranks on this rank's host (DDP runs over it).
        across: this rank's cross-host group (its local index on every host), or None when
            its local index is not below ``shards``.
        shards: how many ranks of each host carry a share of the cross-host traffic.
        local_index: this rank's position on its host.
        local_global_ranks: the global ranks of this host, in local order.
    """

    layout: Layout
    local: dist.ProcessGroup
    across: dist.ProcessGroup | None
    shards: int
    local_index: int
    local_global_ranks: tuple[int, ...]


def host_layout(group: dist.ProcessGroup | None = None) -> Layout:
    """The group's ranks by host: the ringrt world's own layout for the default group
    under the "ringrt" backend, else the same :class:`Layout` built from every rank's host
    identity (``RINGRT_HOST_ID`` or the hostname)."""
    from ringrt._comm.transport import host_identity
    from ringrt.torch import _creator

    if group is None and dist.get_backend() == "ringrt" and _creator._world is not None:
        return _creator._world.layout
    hosts: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(hosts, host_identity(), group=group)
    return Layout.of(hosts)


def host_groups(group: dist.ProcessGroup | None = None) -> HostGroups:
    """Create the per-host and cross-host subgroups of ``group`` (a collective call: every
    rank of ``group`` must make it, in the same order as its other ``new_group`` calls)."""
    layout = host_layout(group)
    me = dist.get_rank(group)
    to_global = [dist.get_global_rank(group, r) if group is not None else r
                 for r in range(dist.get_world_size(group))]
    local = None
    for ranks in layout.hosts:                      # every rank creates every group
        created = dist.new_group([to_global[r] for r in ranks])
        if me in ranks:
            local = created
    shards = min(layout.sizes)
    index = layout.local_ranks(me).index(me)
    across = None
    for k in range(shards):
        created = dist.new_group([to_global[ranks[k]] for ranks in layout.hosts])
        if k == index:
            across = created
    return HostGroups(layout, local, across, shards, index,
                      tuple(to_global[r] for r in layout.local_ranks(me)))


class DiLoCo:
    """DiLoCo around a torch model and its (inner) optimizer; see the module docstring.

    Args:
        model: the replica's model; its parameters are broadcast from rank 0 of ``group``.
        inner_optimizer: any torch optimizer over ``model``'s parameters.
        sync_every: H, inner steps between two syncs of each parameter.
        outer_lr: outer SGD learning rate (DiLoCo: 0.7).
        outer_momentum: outer momentum (DiLoCo: 0.9).
        nesterov: Nesterov momentum for the outer step (DiLoCo: yes).
        fragments: F; one fragment of the parameters is synced every H/F steps.
        compress: None, ``"bf16"`` or ``"int8"`` pseudo-gradients.
        error_feedback: with ``compress``: carry what compression left out of this rank's
            pseudo-gradient into its next one. None: :attr:`default_error_feedback` when
            compressing, else off.
        overlap: run the outer all_reduce during the next inner step; apply it one step late.
        two_level: DDP inside each host, DiLoCo across hosts (``model`` is then wrapped:
            call ``diloco.model``).
        group: the process group (default: the world).

    Raises:
        ValueError: bad options (on the rank that passed them, before any communication).
    """

    default_error_feedback = False

    def __init__(self, model: nn.Module, inner_optimizer: torch.optim.Optimizer,
                 sync_every: int, *, outer_lr: float = 0.7, outer_momentum: float = 0.9,
                 nesterov: bool = True, fragments: int = 1, compress: str | None = None,
                 error_feedback: bool | None = None, overlap: bool = True,
                 two_level: bool = False, group: dist.ProcessGroup | None = None):
        params = [p for p in model.parameters() if p.requires_grad]
        _check_options(params, sync_every, fragments, compress, outer_lr, outer_momentum)
        self.error_feedback = _error_feedback(error_feedback, compress,
                                              self.default_error_feedback)
        self.inner = inner_optimizer
        self.sync_every, self.fragments, self.compress = sync_every, fragments, compress
        self.outer_lr, self.outer_momentum, self.nesterov = outer_lr, outer_momentum, nesterov
        self.overlap = overlap
        _broadcast_parameters(params, group)
        self.hosts = host_groups(group) if two_level else None
        self.model = _wrap_local(model, self.hosts)
        self._fragments = _split(params, fragments)
        self._global = [_flat(ps).clone() for ps in self._fragments]
        self._momentum = [torch.zeros_like(g) for g in self._global]
        self._residual = [torch.zeros_like(g) for g in self._global] \
            if self.error_feedback else None
        self._group = group
        self.inner_steps = 0
        self._pending: _Pending | None = None

    # -- the training step --------------------------------------------------------------

    def step(self, closure=None):
        """The inner optimizer's step; then, every H/F steps, a fragment's outer step
        (started now, applied at the next step when ``overlap``). Returns the inner loss."""
        loss = self.inner.step(closure)
        self.inner_steps += 1
        if self._pending is not None:
            self._apply(self._pending)
        interval = self.sync_every // self.fragments
        if self.inner_steps % interval == 0:
            fragment = (self.inner_steps // interval - 1) % self.fragments
            self._pending = self._start(fragment)
            if not self.overlap:
                self._apply(self._pending)
        return loss

    def finish(self) -> None:
        """Apply a pending outer step now (at the end of training, before evaluating)."""
        if self._pending is not None:
            self._apply(self._pending)

    def consolidate(self) -> None:
        """Make every replica identical: apply a pending outer step, average the parameters
        and the inner optimizer's per-element state over the group, and make the averaged
        parameters the global ones. Every rank calls it at the same step (an outer-step
        boundary: before a checkpoint one rank writes, or an elastic membership change).
        Error-feedback residuals stay per rank."""
        self.finish()
        size = dist.get_world_size(self._group)
        with torch.no_grad():
            for f, params in enumerate(self._fragments):
                flat = _flat(params).div_(size)
                dist.all_reduce(flat, group=self._group)
                _write_flat(params, flat)
                self._global[f].copy_(flat)
            for param, state in self.inner.state.items():
                for key in sorted(state):          # the same order on every rank
                    value = state[key]             # per-element state (Adam's moments)
                    if torch.is_tensor(value) and value.shape == param.shape \
                            and value.is_floating_point():
                        averaged = value.div(size)
                        dist.all_reduce(averaged, group=self._group)
                        value.copy_(averaged)

    def _start(self, fragment: int) -> _Pending:
        snapshot = _flat(self._fragments[fragment])
        delta = self._global[fragment] - snapshot
        residual = None if self._residual is None else self._residual[fragment]
        if residual is not None:
            delta += residual
        return _Pending(fragment, snapshot, self._exchange(delta, residual))

    def _apply(self, pending: _Pending) -> None:
        """Outer Nesterov step on the averaged pseudo-gradient; the local parameters become
        the new global ones plus what the inner steps since the start added."""
        self._pending = None
        average = pending.average()
        f = pending.fragment
        momentum = self._momentum[f].mul_(self.outer_momentum).add_(average)
        update = average.add(momentum, alpha=self.outer_momentum) if self.nesterov \
            else momentum
        self._global[f].sub_(update, alpha=self.outer_lr)
        with torch.no_grad():
            offset = 0
            for p in self._fragments[f]:
                n = p.numel()
                drift = p.reshape(-1) - pending.snapshot[offset:offset + n]
                p.copy_((self._global[f][offset:offset + n] + drift).view_as(p))
                offset += n

    # -- communication ------------------------------------------------------------------

    def _exchange(self, delta: torch.Tensor, residual: torch.Tensor | None) -> _Exchange:
        """Start averaging ``delta`` over the replicas (hosts, under two_level); with
        error feedback, leave in ``residual`` what compression took from what this rank
        sends (zero where it sends nothing)."""
        hosts = self.hosts
        if hosts is None:
            return _Exchange(delta, self.compress, self._group, None, residual)
        bounds = _shard_bounds(delta.numel(), hosts.shards)
        mine = hosts.local_index < hosts.shards
        part = delta[slice(*bounds[hosts.local_index])] if mine else None
        lost = None
        if residual is not None:
            residual.zero_()
            lost = residual[slice(*bounds[hosts.local_index])] if mine else None
        return _Exchange(part, self.compress, hosts.across, (delta, bounds, hosts), lost)

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The outer state; a pending all_reduce is waited for and its result kept (to be
        applied at the next step, as without the checkpoint)."""
        state = {"inner_steps": self.inner_steps, "global": [g.clone() for g in self._global],
                 "momentum": [m.clone() for m in self._momentum],
                 "options": self._options(), "pending": None,
                 "residual": None if self._residual is None
                 else [r.clone() for r in self._residual]}
        if self._pending is not None:
            p = self._pending
            state["pending"] = {"fragment": p.fragment, "snapshot": p.snapshot.clone(),
                                "average": p.average().clone()}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s outer state (load the model and inner optimizer
        too). Error-feedback residuals restart at zero where ``state["residual"]`` is None
        (a state saved by another rank count: they belong to ranks). Raises ValueError if
        the options differ from the saved run's."""
        saved = dict(state["options"], error_feedback=state["options"].get("error_feedback",
                                                                           False))
        if saved != self._options():
            raise ValueError(f"DiLoCo.load_state_dict: the checkpoint was saved with options "
                             f"{state['options']}, this run has {self._options()}; "
                             f"construct DiLoCo with the saved options")
        self.inner_steps = state["inner_steps"]
        for mine, saved in zip(self._global + self._momentum,
                               state["global"] + state["momentum"], strict=True):
            mine.copy_(saved)
        pending = state["pending"]
        self._pending = None if pending is None else _Pending(
            pending["fragment"], pending["snapshot"].clone(), _Done(pending["average"]))
        if self._residual is not None:
            saved_residual = state.get("residual") or [torch.zeros_like(r)
                                                       for r in self._residual]
            for mine, value in zip(self._residual, saved_residual, strict=True):
                mine.copy_(value)

    def _options(self) -> dict:
        return {"sync_every": self.sync_every, "fragments": self.fragments,
                "compress": self.compress, "sizes": [g.numel() for g in self._global],
                "error_feedback": self.error_feedback}


@dataclass
class _Pending:
    """An outer step under way: which fragment, its parameters when it started, and the
    exchange averaging its pseudo-gradient."""

    fragment: int
    snapshot: torch.Tensor
    exchange: object

    def average(self) -> torch.Tensor:
        return self.exchange.wait()


class _Done:
    """An exchange already finished (restored from a checkpoint)."""

    def __init__(self, average: torch.Tensor):
        self._average = average

    def wait(self) -> torch.Tensor:
        return self._average


class _Exchange:
    """The average over ``group`` of ``part`` (this rank's share of a pseudo-gradient),
    started at construction, compressed as asked; under two levels, ``host`` = (the whole
    pseudo-gradient, the shares' bounds, the HostGroups) for spreading the shares after."""

    def __init__(self, part, compress, group, host, lost=None):
        self.host = host
        self._result = None
        self._finish = None if part is None else _start_average(part, compress, group, lost)

    def wait(self) -> torch.Tensor:
        if self._result is None:
            share = None if self._finish is None else self._finish()
            self._result = share if self.host is None else _spread(share, *self.host)
        return self._result


def _start_average(part: torch.Tensor, compress, group, lost=None):
    """Start averaging ``part`` over ``group``; returns a function that waits and returns
    the float32 average. ``lost`` (``part``'s size), if given, receives ``part`` minus
    what this rank's message carries."""
    size = dist.get_world_size(group)
    if compress == "int8":
        return _start_int8(part, group, size, lost)
    wire = part.to(torch.bfloat16) if compress == "bf16" else part.clone()
    if lost is not None:
        torch.sub(part, wire.float(), out=lost)
    wire.div_(size)
    work = dist.all_reduce(wire, group=group, async_op=True)

    def finish():
        work.wait()
        return wire.float()
    return finish


def _start_int8(part: torch.Tensor, group, size: int, lost=None):
    """int8 codes in blocks of INT8_BLOCK with a float32 scale each, all-gathered; the
    average is dequantized and summed in float32 in rank order (deterministic)."""
    codes, scales = _int8_encode(part)
    if lost is not None:
        sent = (codes.float() * scales[:, None]).reshape(-1)[:part.numel()]
        torch.sub(part, sent, out=lost)
    blocks = scales.numel()
    all_codes = torch.empty(size * blocks, INT8_BLOCK, dtype=torch.int8)
    all_scales = torch.empty(size * blocks)
    works = [dist.all_gather_into_tensor(all_codes, codes, group=group, async_op=True),
             dist.all_gather_into_tensor(all_scales, scales, group=group, async_op=True)]

    def finish():
        for work in works:
            work.wait()
        total = torch.zeros(blocks, INT8_BLOCK)
        for r in range(size):
            rows = slice(r * blocks, (r + 1) * blocks)
            total += all_codes[rows].float() * all_scales[rows, None]
        return total.reshape(-1)[:part.numel()].div_(size)
    return finish


def _int8_encode(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes (blocks, INT8_BLOCK) int8, scales (blocks,) float32): value ~ code * scale."""
    n = values.numel()
    padded = torch.zeros(-(-n // INT8_BLOCK) * INT8_BLOCK)
    padded[:n] = values
    padded = padded.view(-1, INT8_BLOCK)
    scales = padded.abs().amax(dim=1).div_(127).clamp_(min=torch.finfo(torch.float32).tiny)
    codes = torch.round(padded / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return codes, scales


def _spread(share, whole: torch.Tensor, bounds, hosts: HostGroups) -> torch.Tensor:
    """Every share's owner on this host broadcasts its averaged share to the host's ranks."""
    out = torch.empty_like(whole)
    if share is not None:
        out[slice(*bounds[hosts.local_index])] = share
    if len(hosts.local_global_ranks) > 1:
        for k in range(hosts.shards):
            piece = out[slice(*bounds[k])]
            dist.broadcast(piece, src=hosts.local_global_ranks[k], group=hosts.local)
    return out


# -- helpers --------------------------------------------------------------------------------

def _check_options(params, sync_every, fragments, compress, outer_lr, outer_momentum):
    if not params:
        raise ValueError("DiLoCo: the model has no parameters that require grad")
    if not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"DiLoCo: sync_every must be a positive int, got {sync_every!r}")
    if not isinstance(fragments, int) or not 1 <= fragments <= len(params):
        raise ValueError(f"DiLoCo: fragments must be an int in 1..{len(params)} (the number "
                         f"of parameter tensors), got {fragments!r}")
    if sync_every % fragments:
        raise ValueError(f"DiLoCo: sync_every ({sync_every}) must be a multiple of "
                         f"fragments ({fragments}): one fragment syncs every H/F steps")
    if compress not in COMPRESSIONS:
        raise ValueError(f"DiLoCo: compress must be one of {COMPRESSIONS}, got {compress!r}")
    if outer_lr <= 0 or not 0 <= outer_momentum < 1:
        raise ValueError(f"DiLoCo: need outer_lr > 0 and 0 <= outer_momentum < 1, got "
                         f"{outer_lr} and {outer_momentum}")
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        raise ValueError("DiLoCo: parameters must be float32 CPU tensors")


def _error_feedback(error_feedback, compress, default: bool) -> bool:
    if error_feedback is None:
        return bool(default and compress)
    if not isinstance(error_feedback, bool):
        raise ValueError(f"DiLoCo: error_feedback must be True, False or None (the default), "
                         f"got {error_feedback!r}")
    if error_feedback and compress is None:
        raise ValueError("DiLoCo: error_feedback=True needs compress='bf16' or 'int8' "
                         "(uncompressed pseudo-gradients lose nothing to feed back)")
    return error_feedback


def _write_flat(params: list, flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def _broadcast_parameters(params, group) -> None:
    """Every replica starts from rank 0's parameters."""
    src = dist.get_global_rank(group, 0) if group is not None else 0
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=src, group=group)


def _wrap_local(model: nn.Module, hosts: HostGroups | None) -> nn.Module:
    if hosts is None:
        return model
    return nn.parallel.DistributedDataParallel(model, process_group=hosts.local)


def _split(params: list, fragments: int) -> list[list]:
    """Contiguous runs of the parameters, none empty, with about equal numbers of values."""
    total = sum(p.numel() for p in params)
    out: list[list] = [[] for _ in range(fragments)]
    k = seen = 0
    for i, p in enumerate(params):
        later_fragments = fragments - 1 - k
        if out[k] and later_fragments and (seen >= total * (k + 1) / fragments
                                          or len(params) - i <= later_fragments):
            k += 1
        out[k].append(p)
        seen += p.numel()
    return out


def _flat(params: list) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def _shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    return [(k * n // shards, (k + 1) * n // shards) for k in range(shards)]
