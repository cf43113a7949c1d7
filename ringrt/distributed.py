"""The default process group: the one global, and the functions that manage it.

``init_process_group`` reads the job (``_env``), connects to the rendezvous store (rank 0
hosts it unless the launcher does), builds the world :class:`ProcessGroup`, and installs an
excepthook so that an unhandled exception on this rank is reported to the others before the
process exits. Everything else in ringrt reaches the default group through :func:`resolve`.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from ringrt._algorithms import tree
from ringrt._comm.auth import LinkSecurity
from ringrt._curve import derive_keys
from ringrt._deadline import seconds
from ringrt._env import resolve_job
from ringrt._process_group import NonMember, ProcessGroup, default_namespace
from ringrt._settings import Settings
from ringrt.errors import NotInitializedError

if TYPE_CHECKING:
    from ringrt.store import Store

DEFAULT_TIMEOUT = 300.0          # seconds, when neither the caller nor RINGRT_TIMEOUT says

_world: ProcessGroup | None = None
_store: Store | None = None
_init_count = 0
_previous_excepthook = None
_other_worlds: list[ProcessGroup] = []     # also told of a failure (ringrt.torch's world)


def init_process_group(backend: str | None = "zmq", init_method: str | None = None,
                       rank: int | None = None, world_size: int | None = None,
                       timeout: float | timedelta | None = None, *, store: Store | None = None,
                       encrypt: bool | None = None) -> None:
    """Join the job's default process group (call once per process, on every rank).

    Args:
        backend: ``"zmq"`` (the only backend; ``"gloo"`` is accepted as an alias so torch
            scripts run unchanged).
        init_method: ``"env://"`` (default: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
            ``MASTER_PORT``, ``RINGRT_TOKEN``; falling back to SLURM and Open MPI / PMI
            variables) or ``"tcp://HOST:PORT"`` with ``rank`` and ``world_size``.
        rank: this process's rank, overriding what the environment says.
        world_size: the number of ranks, overriding what the environment says.
        timeout: seconds (or timedelta) for rendezvous and for each collective; None (the
            default): ``RINGRT_TIMEOUT`` (set by ``ringrun --timeout``), else 300.
        store: an already connected :class:`ringrt.Store` to rendezvous through.
        encrypt: True: CurveZMQ (keys derived from the token) on every socket, the store
            and loopback tcp included; False: token-authenticated but not encrypted; None
            (default): ``RINGRT_ENCRYPT`` (``ringrun --encrypt`` sets 1), and when that is
            unset, links to other hosts are encrypted and everything is authenticated.
            Every rank must agree. See README "Security".

    Raises:
        ValueError: bad arguments, or the group is already initialised.
        ringrt.errors.AuthenticationError: the store refused our ``RINGRT_TOKEN``.
        ringrt.errors.TimeoutError: not every rank joined within ``timeout``.
    """
    global _world, _store, _init_count
    if _world is not None:
        raise ValueError("init_process_group was already called in this process; call "
                         "destroy_process_group() first")
    if backend not in (None, "zmq", "gloo", "cpu:gloo"):
        raise ValueError(f"backend {backend!r} is not available: ringrt has one backend, 'zmq'")
    settings = Settings.read()           # the one read of RINGRT_*; handed down from here
    job = resolve_job(init_method, rank, world_size, encrypt, settings=settings)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT if settings.timeout is None else settings.timeout
    op_timeout = seconds(timeout)
    curve = derive_keys(job.token) if job.encrypt else None
    own_store = store is None
    if store is None:
        store = _connect_store(job, op_timeout, curve)
    security = LinkSecurity(token=job.token, encrypt=job.encrypt, insecure=job.insecure_tcp)
    try:
        _world = ProcessGroup(store, job.rank, job.world_size, op_timeout,
                              default_namespace(job.restart_count, _init_count), security,
                              settings=settings)
    except BaseException:
        if own_store:
            store.close()
        raise
    _init_count += 1
    _store = store
    _install_failure_report()


def _connect_store(job, timeout: float, curve) -> Store:
    from ringrt.store import Store

    hosts = job.rank == 0 and not job.store_hosted_elsewhere
    extra = {"curve": curve} if curve is not None else {}
    return Store(job.master_addr, job.master_port, job.token, is_master=hosts, timeout=timeout,
                 rank=job.rank, **extra)


def is_initialized() -> bool:
    """True between ``init_process_group`` and ``destroy_process_group``."""
    return _world is not None


def resolve(group: ProcessGroup | NonMember | None = None,
            op: str = "this call") -> ProcessGroup | NonMember:
    """The group to use: ``group`` itself, or the default group when None.

    Raises:
        NotInitializedError: no default group (``init_process_group`` not called yet).
    """
    return group if group is not None else _default_world(op)


def _default_world(op: str) -> ProcessGroup:
    if _world is None:
        raise NotInitializedError(f"{op} needs a process group: call "
                                  "ringrt.init_process_group() first")
    return _world


def get_rank(group: ProcessGroup | NonMember | None = None) -> int:
    """This process's rank in ``group`` (default: the world); -1 if not a member."""
    group = resolve(group, "get_rank")
    return -1 if isinstance(group, NonMember) else group.rank


def get_world_size(group: ProcessGroup | NonMember | None = None) -> int:
    """The number of ranks in ``group`` (default: the world); -1 if not a member."""
    group = resolve(group, "get_world_size")
    return -1 if isinstance(group, NonMember) else group.size


def stats() -> dict:
    """This rank's counters, for monitoring and for seeing what ringrt did and refused.

    Returns:
        A JSON-ready dict::

            {"rank": 0,
             "ops": {"all_reduce": {"calls", "bytes", "seconds", "failed"}, ...},
             "algorithms": {"all_reduce/shm": 12, "broadcast/binomial": 1, ...},
             "transport": {"routes": {peer: "ipc" | "tcp"},
                           "tcp_mechanism": "curve" | "plain" | "null" | None,
                           "dropped_frames",          # malformed or stale data messages
                           "dropped_heartbeats",      # malformed heartbeat messages
                           "disconnects",             # peer connections that dropped
                           "connections_accepted",    # on this rank's tcp sockets
                           "connections_authenticated",
                           "connections_refused",     # never proved the job token
                           "zap_denied", "handshake_failed"},
             "shm": {"waits", "spins", "spin_seconds", "sleeps", "slept_seconds",
                     "wakeups", "changed", "timeouts", "interrupted",
                     "missed_wakeups",          # timed out though a wake had come: lost
                     "overslept",               # timed out though the wait was over
                     "moves",                   # moved off a late peer's CPU (fast path)
                     "by_op": {"all_reduce": {the same}, ..., "p2p": {...}}} or None,
             "shm_groups": {"arenas",        # subgroups' shared memory (docs/groups.md)
                            "mapped_bytes"},  # their segments this rank maps
             "observe": {"flight_recorder_size",   # RINGRT_FLIGHT_RECORDER (64)
                         "ops_recorded",           # ops this world's recorder has seen
                         "trace"},                 # this rank's timeline file, or None
             "store": the store server's counters when this rank hosts it, else None}

        ``bytes`` counts each op's array payload as this rank passed it; ``seconds`` is the
        time spent inside ops (an async op from when it starts running). Without a default
        ringrt group, the counters are those of the world behind ``ringrt.torch``'s groups.

    Raises:
        NotInitializedError: no process group.
    """
    torch_world = next((w for w in _other_worlds if not w.closed), None)
    world = _default_world("stats") if _world is not None or torch_world is None else torch_world
    server_stats = getattr(_store, "server_stats", None) if world is _world else None
    return {**world.stats(), "store": server_stats() if server_stats else None}


def get_store() -> Store:
    """The rendezvous :class:`ringrt.Store` the default group was built with."""
    resolve(None, "get_store")
    assert _store is not None                   # set with _world, which resolve found
    return _store


def new_group(ranks: Sequence[int] | None = None,
              timeout: float | timedelta | None = None) -> ProcessGroup | NonMember:
    """Create a subgroup of the world. Every rank must call it, in the same order, with the
    same ``ranks`` (a disagreement raises CollectiveMismatchError).

    Args:
        ranks: global ranks of the members (None = all ranks).
        timeout: op timeout for the new group (default: the world's).

    Returns:
        A ProcessGroup on members; a non-member handle elsewhere (collectives on it are
        no-ops, as in torch).
    """
    return _default_world("new_group").new_group(ranks, seconds(timeout), barrier=tree.barrier)


def destroy_process_group(group: ProcessGroup | NonMember | None = None) -> None:
    """Leave ``group``; with None, shut the default group down (flushing queued messages,
    saying goodbye to peers, closing sockets and the store). A subgroup frees its shared
    memory on this rank, and later ops on it raise; its sockets are the world's. Safe to
    call twice."""
    global _world, _store
    if group is not None and group is not _world:
        if isinstance(group, ProcessGroup):
            group.destroy()
        return
    if _world is None:
        return
    world, store = _world, _store
    _world, _store = None, None
    try:
        world.close()
    finally:
        if store is not None:
            store.close()


def report_failures_to(world: ProcessGroup) -> None:
    """Tell ``world``'s peers, too, when this process dies of an unhandled exception (for
    worlds other than the default group: ``ringrt.torch`` builds its own)."""
    _other_worlds[:] = [w for w in _other_worlds if not w.closed]
    if world not in _other_worlds:
        _other_worlds.append(world)
    _install_failure_report()


def _install_failure_report() -> None:
    global _previous_excepthook
    if _previous_excepthook is None:
        _previous_excepthook = sys.excepthook
        sys.excepthook = _report_failure_then_exit
        atexit.register(destroy_process_group)


def _report_failure_then_exit(exc_type, exc, tb) -> None:
    """Tell the peers this rank is failing (they raise PeerLostError), then print as usual."""
    reason = f"{exc_type.__name__}: {exc}".strip()
    for world in [_world, *_other_worlds]:
        if world is None or world.closed:
            continue
        try:
            world.announce_failure(reason[:2000])
            world.close(linger_s=1.0, goodbye=False)
        except Exception:  # noqa: BLE001 - reporting must never mask the original error
            pass
    (_previous_excepthook or sys.__excepthook__)(exc_type, exc, tb)
