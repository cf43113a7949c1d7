"""The backend's creator: one ringrt communicator per process, shared by its "ringrt" groups.

torch calls :func:`create` for the default group on every rank, and for
``new_group(ranks, backend="ringrt")`` on the member ranks only:

- the default group builds this process's ringrt world -- rendezvous through the store torch
  hands it, sockets, heartbeats, shared memory when every rank is on this host -- as
  ``ringrt.init_process_group`` would;
- a subgroup becomes a ringrt subgroup of that world, its members agreeing on its id through
  the group's own store prefix (non-members never hear of it:
  :meth:`ringrt.ProcessGroup.new_member_group`);
- a subgroup made while torch's default group is another backend (gloo) gets a ringrt world
  of its own among its members.

The job token (``RINGRT_TOKEN``) and ``RINGRT_ENCRYPT`` apply as in ringrt; when torch leaves
the timeout at its default, ``RINGRT_TIMEOUT`` (``ringrun --timeout``) wins, as in ringrt.
"""

from __future__ import annotations

import atexit
import warnings

from torch.distributed.constants import default_pg_timeout

from ringrt._comm.auth import LinkSecurity
from ringrt._deadline import seconds
from ringrt._env import resolve_job
from ringrt._process_group import ProcessGroup, default_namespace
from ringrt._settings import Settings
from ringrt.distributed import report_failures_to
from ringrt.torch import _rendezvous
from ringrt.torch._backend import ProcessGroupRingrt
from ringrt.torch._stores import StoreOverTorch

_world: ProcessGroup | None = None          # the ringrt world behind torch's default group
_worlds_built = 0


def create(options, backend_options=None) -> ProcessGroupRingrt:
    """torch's entry point (registered with ``extended_api=True``).

    Args:
        options: torch's ``_DistributedBackendOptions``: ``store`` (this group's prefix of
            the job store), ``group_rank``, ``group_size``, ``timeout``, ``group_id`` and
            ``global_ranks_in_group`` (empty for the default group).
        backend_options: unused.
    """
    global _world
    store, rank, size = options.store, options.group_rank, options.group_size
    settings = Settings.read()           # RINGRT_*, read once per group torch creates
    timeout = _timeout(options.timeout, settings)
    ranks = list(options.global_ranks_in_group)
    if not ranks:
        _world = _new_world(store, rank, size, timeout, settings)
        return ProcessGroupRingrt(_world, on_shutdown=_close_default_world)
    if _world is not None and not _world.closed:
        agreement = StoreOverTorch(store, _world.global_rank)
        members = _world.new_member_group(ranks, agreement, timeout)
        return ProcessGroupRingrt(members, on_shutdown=members.destroy)
    own = _new_world(store, rank, size, timeout, settings)
    return ProcessGroupRingrt(own, on_shutdown=own.close)


def _new_world(store, rank: int, size: int, timeout: float,
               settings: Settings) -> ProcessGroup:
    """A ringrt world of ``size`` ranks rendezvousing through torch's ``store``."""
    global _worlds_built
    job = resolve_job("env://", rank, size, settings=settings)
    if not job.token:
        warnings.warn("no RINGRT_TOKEN and no ~/.config/ringrt/token: ringrt cannot "
                      "authenticate its connections; export the same secret to every rank "
                      "(ringrun does this for you)", stacklevel=4)
    namespace = default_namespace(job.restart_count, _worlds_built) + "/torch"
    _worlds_built += 1
    world = ProcessGroup(StoreOverTorch(store, rank, job.master_addr), rank, size, timeout,
                         namespace=namespace, settings=settings, **_link_options(job))
    report_failures_to(world)
    atexit.register(world.close)
    return world


def _link_options(job) -> dict:
    """How the world's sockets are secured: as ``ringrt.init_process_group`` does it (every
    link token-checked; CurveZMQ across hosts, and everywhere with ``RINGRT_ENCRYPT=1``)."""
    return {"security": LinkSecurity(token=job.token, encrypt=job.encrypt,
                                     insecure=job.insecure_tcp)}


def _close_default_world() -> None:
    """torch destroyed its default group: close the ringrt world and the stores under it."""
    global _world
    world, _world = _world, None
    if world is not None:
        world.close()
    _rendezvous.close_stores()


def _timeout(timeout, settings: Settings) -> float:
    """torch's group timeout in seconds; RINGRT_TIMEOUT when torch's is its default."""
    if timeout is None or timeout == default_pg_timeout:
        if settings.timeout is None:
            return seconds(default_pg_timeout)
        return settings.timeout
    return seconds(timeout)
