"""Process groups: who is in the group, op sequence numbers, and how an op is run.

``ProcessGroup(store, rank, world_size, timeout)`` builds a working world group directly
(tests use it without any global state): it rendezvouses through the store, binds this rank's
sockets, connects to every peer and starts the heartbeat sentinel. Subgroups
(:meth:`ProcessGroup.new_group`, every rank calling, or :meth:`ProcessGroup.new_member_group`,
members only) share the world's sockets; their messages carry their own group id and
sequence numbers.

An op runs as: check the group is usable -> take the next sequence number -> run the
algorithm on an :class:`~ringrt._comm.exchange.Exchange` (inline, or on the executor thread for
``async_op=True``) -> release the op's leftovers. A group breaks for good on a lost peer, a
mismatch or an op timeout; every later op on it raises the same error.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import sys
import time
import zlib
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

import msgpack
import zmq

from ringrt._comm import channel, wire
from ringrt._comm.auth import Guard, LinkSecurity
from ringrt._comm.counters import OpCounters
from ringrt._comm.exchange import Exchange, Mailbox
from ringrt._comm.group_shm import group_arenas
from ringrt._comm.host_layout import Layout
from ringrt._comm.host_shm import local_host_arena
from ringrt._comm.rendezvous import exchange_cards, job_nonce, open_gate, share_memory
from ringrt._comm.sentinel import LEFT_REASON, Sentinel
from ringrt._comm.shm import ShmArena
from ringrt._comm.shm_p2p import ShmPointToPoint
from ringrt._comm.socket_p2p import SocketPointToPoint
from ringrt._comm.transport import (
    Endpoints,
    Transport,
    make_ipc_dir,
    remove_ipc_dir,
    route_address,
)
from ringrt._comm.work import Executor
from ringrt._deadline import Deadline, seconds
from ringrt._env import job_token
from ringrt._observe import clock
from ringrt._observe.merge import merge_when_all_closed
from ringrt._observe.observer import Observer, launcher_merges_trace, ranks_to_ping, tracing_card
from ringrt._settings import Settings
from ringrt.errors import DistError, PeerLostError

# Ids of groups formed by their members alone (new_member_group) start here, far above the
# ids new_group counts up from 1, so the two kinds never collide in one job.
MEMBER_GROUP_IDS = 1 << 24
CLOCK_SYNC_COUNT = 0xC10C      # tells the clock-sync op from a barrier in mismatch reports


class OpSpec(NamedTuple):
    """What every rank must agree on for one op, plus its public name for messages.
    (A NamedTuple: built on every call, and tuples are the cheapest immutable records.)"""

    name: str
    op: int
    dtype_code: int = 0
    count: int = -1
    root: int = -1
    redop: int = 0
    algorithm: str = ""                # what runs it ("": no choice made); flight recorder

    @property
    def shm(self) -> bool:
        """It runs over the same-host shared-memory arena."""
        return self.algorithm == "shm"

    def signature(self) -> tuple:
        return (self.op, self.dtype_code, self.count, self.root, self.redop)


class _Comm:
    """The world-wide machinery of one rank: sockets, sentinel, mailbox, executor."""

    def __init__(self, store, rank: int, world_size: int, namespace: str, deadline: Deadline,
                 security: LinkSecurity, settings: Settings):
        self.rank, self.world_size, self.store = rank, world_size, store
        self.settings = settings
        self.namespace = namespace           # job-wide keys of member-formed subgroups
        self.context = zmq.Context(io_threads=1)
        self.ipc_dir = make_ipc_dir(settings=settings)
        # Point-to-point over shared memory needs a little room in every arena segment; it is
        # used only if every rank made that room (RINGRT_P2P=sockets on any rank: nobody).
        p2p_bytes = channel.area_bytes(world_size) if settings.p2p == "auto" else 0
        self.arena = ShmArena.create(rank, world_size, p2p_bytes, settings)
        self.host_arena = None               # multi-host jobs: this host's ranks (host_shm)
        self.group_arenas = []               # subgroups' arenas (group_shm), closed with us
        self.guard = None
        try:
            security = dataclasses.replace(security, nonce=job_nonce(store, namespace))
            self.guard = Guard(self.context, rank, security)
            endpoints = Endpoints(route_address(store.host, settings), self.ipc_dir, security,
                                  self.guard, settings)
            self.transport = Transport(self.context, rank, endpoints)
            self.sentinel = Sentinel(self.context, rank, endpoints, settings)
            cards = self._rendezvous(store, namespace, deadline, endpoints.mode)
            self.arena = share_memory(self.arena, cards, store, namespace, rank, deadline)
            self.hosts = {r: c["data"]["host"] for r, c in cards.items()}  # rank -> host
            self.host_arena = local_host_arena(self.hosts, rank, store, namespace, deadline,
                                               self.guard.security.token, settings)
        except BaseException:
            if self.arena is not None:
                self.arena.close()
            if self.host_arena is not None:
                self.host_arena.close()
            if self.guard is not None:
                self.guard.stop()
            self.context.destroy(linger=0)
            remove_ipc_dir(self.ipc_dir)
            raise
        self.transport.connect({r: c["data"] for r, c in cards.items()})
        self.cores = {r: c["data"].get("cores") for r, c in cards.items()}  # rank -> its cores
        self.pinged = ranks_to_ping(cards, self.hosts)     # clock sync for the timeline
        self.sentinel.start({r: c["heart"] for r, c in cards.items()})
        self.counters = OpCounters()
        self.observer = Observer(rank, world_size, wire.CODE_DTYPES, settings.trace, settings)
        self.mailbox = Mailbox(self.transport, rank, self.observer.wait_clock)
        if self.arena is not None:
            self.arena.time_waits_with(self.observer.wait_clock)
        self.executor = Executor(f"ringrt-ops-{rank}")
        if self.arena is not None and all(c["shm"]["p2p_bytes"] for c in cards.values()):
            self.p2p = ShmPointToPoint(self.arena, self.sentinel.lost, self.counters)
        else:
            self.p2p = SocketPointToPoint(self.transport, self.mailbox, self.executor,
                                          self.counters, rank)
        self.next_group_id = 1
        self.closed = False

    def _rendezvous(self, store, namespace: str, deadline: Deadline, mode: str) -> dict:
        """Exchange address cards; listen on tcp (a second round) only if a peer needs it."""
        card = {"data": self.transport.card, "heart": self.sentinel.card,
                "shm": self.arena.card if self.arena else None,
                "trace": tracing_card(self.settings)}
        token = self.guard.security.token
        cards = exchange_cards(store, f"{namespace}/card", self.rank, self.world_size, card,
                               deadline, token)
        if mode == "tcp" or len({c["data"]["host"] for c in cards.values()}) > 1:
            _require_token(self.guard.security, self.rank)
            network = {"data": self.transport.open_network(),
                       "heart": self.sentinel.open_network()}
            extra = exchange_cards(store, f"{namespace}/net", self.rank, self.world_size,
                                   network, deadline, token)
            for peer, theirs in cards.items():
                theirs["data"].update(extra[peer]["data"])
                theirs["heart"].update(extra[peer]["heart"])
        open_gate(store, namespace, self.world_size, deadline)
        return cards

    def stats(self) -> dict:
        """This rank's counters (see ``ringrt.stats``)."""
        guard = self.guard.counts
        transport = {
            "routes": dict(sorted(self.transport.routes.items())),
            "tcp_mechanism": self.transport.card.get("tcp_auth"),    # None: no tcp socket
            "dropped_frames": self.mailbox.dropped,
            "dropped_heartbeats": self.sentinel.dropped,
            "disconnects": self.sentinel.disconnects,
            "connections_accepted": guard["accepted"],
            "connections_authenticated": guard["authenticated"],
            "connections_refused": self.guard.refused(),
            "zap_denied": guard["zap_denied"],
            "handshake_failed": guard["handshake_failed"],
        }
        return {"rank": self.rank, **self.counters.snapshot(), "transport": transport,
                "shm": self.arena.tally.snapshot() if self.arena is not None else None,
                "p2p": self.p2p.stats(),
                "shm_groups": {"arenas": len(self.group_arenas),
                               "mapped_bytes": sum(a.mapped_bytes() for a in self.group_arenas)},
                "observe": self.observer.stats()}

    def close(self, linger_s: float, goodbye: bool = True) -> None:
        """Stop everything; queued messages get ``linger_s`` to leave."""
        if self.closed:
            return
        self.closed = True
        self.executor.drain(linger_s)
        self.executor.close()
        self.observer.close()
        merged_by_launcher = launcher_merges_trace(self.settings)
        if goodbye and self.observer.tracer is not None and not merged_by_launcher:
            self._merge_trace()
        self.p2p.close()
        if goodbye:
            self.sentinel.say_goodbye(wait=1.0)
        self.sentinel.stop()
        self.transport.close(int(linger_s * 1000))
        self.guard.stop()
        if self.arena is not None:
            self.arena.close()
        if self.host_arena is not None:
            self.host_arena.close()
        for arena in self.group_arenas:
            arena.close()
        self.context.term()
        remove_ipc_dir(self.ipc_dir)


    def _merge_trace(self) -> None:
        """Without ringrun: rank 0 merges the ranks' timeline files (``_observe/merge``)."""
        try:
            merge_when_all_closed(self.store, f"{self.namespace}/trace_closed", self.rank,
                                  self.world_size, self.observer.tracer.path)
        except Exception as exc:  # noqa: BLE001 - a trace must never fail the shutdown
            print(f"ringrt[{self.rank}]: could not merge the timeline: {exc!r}; merge it "
                  f"with python -m ringrt_launcher.trace {self.observer.tracer.path}",
                  file=sys.stderr)


def _require_token(security: LinkSecurity, rank: int) -> None:
    if not security.token and not security.insecure:
        raise DistError(
            f"rank {rank}: this job needs tcp links (ranks on several hosts, or "
            "RINGRT_TRANSPORT=tcp) and has no token to authenticate them; export the same "
            "RINGRT_TOKEN to every rank (e.g. $(openssl rand -hex 16))"
        )


class ProcessGroup:
    """A set of ranks that run collectives together (the world or a subgroup).

    Args:
        store: a connected :class:`ringrt.Store`.
        rank: this process's rank in the world.
        world_size: the world's size.
        timeout: seconds each op may take before it raises ``TimeoutError``.
        namespace: store key prefix (distinct per job attempt).
        security: how tcp links are authenticated and encrypted (default: the job token
            from the environment, CurveZMQ across hosts; see ``_comm/auth.py``).
        settings: the ``RINGRT_*`` settings every part of the group is built with (default:
            read from the environment now; ``init_process_group`` passes the ones it read).

    Raises:
        ringrt.errors.TimeoutError: some rank did not join within ``timeout``.
    """

    def __init__(self, store: Any, rank: int, world_size: int,
                 timeout: float | datetime.timedelta | None = 300.0,
                 namespace: str = "ringrt", security: LinkSecurity | None = None,
                 settings: Settings | None = None):
        timeout = seconds(timeout)
        settings = Settings.read() if settings is None else settings
        security = security or LinkSecurity(token=job_token(settings=settings))
        comm = _Comm(store, rank, world_size, namespace, Deadline(timeout), security, settings)
        self._setup(comm, 0, list(range(world_size)), timeout)
        if comm.pinged:
            self._align_clock(comm.pinged)

    def _align_clock(self, pinged: list[int]) -> None:
        """Measure this rank's clock offset to rank 0 for the timeline (``_observe/clock``)."""
        spec = OpSpec("clock_sync", wire.OP_CODES["barrier"], count=CLOCK_SYNC_COUNT)
        offset, error = self.run(spec, functools.partial(clock.measure, pinged=pinged))
        if self.observer.tracer is not None:
            self.observer.tracer.set_clock(offset, error)

    @classmethod
    def _subgroup(cls, comm: _Comm, group_id: int, members: list[int], timeout: float):
        group = cls.__new__(cls)
        group._setup(comm, group_id, members, timeout)
        return group

    def _setup(self, comm: _Comm, group_id: int, members: list[int], timeout: float) -> None:
        self.comm = comm
        self.settings = comm.settings                # the world's RINGRT_* settings
        self.group_id = group_id
        self.members = members                       # group rank -> global rank
        self.member_set = frozenset(members)
        self.rank = members.index(comm.rank)
        self.size = len(members)
        self.timeout = timeout
        self._seq = 0
        self._broken = None                          # the error every later op re-raises
        self._destroyed = False                      # destroy(): a subgroup this rank left
        self.fast_paths: dict = {}                   # op -> its fast path (collectives.py)
        if group_id == 0:
            self.arena, self.host_arena = comm.arena, comm.host_arena    # see _comm/host_shm
        else:                                                             # see _comm/group_shm
            self.arena, self.host_arena = group_arenas(comm, group_id, members, timeout)
        # Every rank computes this from the same cards, so algorithm choices agree.
        self.spans_hosts = len({comm.hosts[m] for m in members}) > 1

    def __repr__(self) -> str:
        return f"ProcessGroup(id={self.group_id}, ranks={self.members}, rank={self.rank})"

    # -- what callers ask of a group ------------------------------------------------------
    # ``rank`` is this process's rank in the group, ``global_rank`` its rank in the world.

    @property
    def global_rank(self) -> int:
        return self.comm.rank

    @property
    def world_size(self) -> int:
        return self.comm.world_size

    @property
    def closed(self) -> bool:
        """The world behind this group was destroyed."""
        return self.comm.closed

    @property
    def p2p(self) -> ShmPointToPoint | SocketPointToPoint:
        """Point-to-point between the world's ranks (one of two objects with the same
        methods: shared memory on one host, else the sockets; see ``ringrt/p2p.py``)."""
        return self.comm.p2p

    @property
    def observer(self) -> Observer:
        """This rank's flight recorder and timeline."""
        return self.comm.observer

    @observer.setter
    def observer(self, observer: Observer) -> None:
        """Watch every later op of this group's world with ``observer`` (``ringrt.debug``)."""
        self.comm.observer = observer

    @functools.cached_property
    def layout(self) -> Layout:
        """The group's ranks by host (every rank computes the same from the same cards)."""
        return Layout.of([self.comm.hosts[m] for m in self.members])

    @functools.cached_property
    def host_cores(self) -> tuple[int, ...] | None:
        """Usable cores of each host of :attr:`layout` (the fewest any of its ranks
        reported), or None if some rank did not say."""
        cores = [[self.comm.cores.get(self.members[g]) for g in ranks]
                 for ranks in self.layout.hosts]
        if any(c is None for host in cores for c in host):
            return None
        return tuple(min(host) for host in cores)

    def count_choice(self, op: str, algorithm: str) -> None:
        """Count that ``op`` chose ``algorithm`` (``ringrt.stats()["algorithms"]``)."""
        self.comm.counters.chose(op, algorithm)

    def stats(self) -> dict:
        """This rank's counters (see ``ringrt.stats``)."""
        return self.comm.stats()

    def announce_failure(self, reason: str) -> None:
        """Tell every peer this rank is failing with ``reason`` (they raise PeerLostError)."""
        self.comm.sentinel.announce_failure(reason)

    def lost_members(self, ranks: Collection[int] | None = None) -> dict[int, str]:
        """The lost peers among ``ranks`` (global ranks; default: the group's members),
        each with why it was lost."""
        lost = self.comm.sentinel.lost
        if not lost:
            return {}
        among = self.member_set if ranks is None else ranks
        return {r: why for r, why in lost.items() if r in among}

    # -- running ops ----------------------------------------------------------------------

    def take_seq(self) -> int:
        """This group's next op sequence number (every op takes one, in call order)."""
        seq = self._seq
        self._seq = seq + 1
        return seq

    def run(self, spec: OpSpec, body: Callable[[Any], Any], async_op: bool = False) -> Any:
        """Run ``body(exchange)`` as this group's next op; returns its result or a Work."""
        self.check_usable(spec.name)
        seq = self.take_seq()
        record = self.comm.observer.entered(self.group_id, seq, spec)
        job = functools.partial(self._execute, seq, spec, body, record)
        description = f"{spec.name} (op #{seq})"
        if async_op:
            return self.comm.executor.submit(job, description)
        return self.comm.executor.run(job, description)

    def _execute(self, seq: int, spec: OpSpec, body, record: list):
        """Run the op, keeping its flight-recorder record (and timeline span) up to date."""
        observer = self.comm.observer
        observer.started(record)
        try:
            self.check_usable(spec.name, seq)
        except BaseException as error:
            observer.finished(record, error)
            raise
        exchange = Exchange(self, seq, spec, Deadline(self.timeout))
        if self.arena is not None:
            self.arena.publish(exchange.published)
        clean, failure = False, None
        start = time.perf_counter()
        try:
            result = body(exchange)
            exchange.finish()
            clean = True
            return result
        except BaseException as error:
            failure = error
            raise
        finally:
            if exchange.shm is not None:
                exchange.shm.release_if_unfinished()
            self.ended(spec.name, seq, _payload_bytes(spec), time.perf_counter() - start, clean)
            observer.finished(record, failure)

    def ended(self, name: str, seq: int, nbytes: int, seconds: float, clean: bool) -> None:
        """Op ``seq`` (``name``, ``nbytes`` of payload, ``seconds`` long) is over on this
        rank: the mailbox drops what is left of it, the counters count it."""
        self.comm.mailbox.finished(self.group_id, seq, clean)
        self.comm.counters.record(name, nbytes, seconds, not clean)

    def claim_executor(self) -> bool:
        """Take the right to run an op inline on this thread, now (``Executor.claim``):
        False while another op is queued or running. Give it back with
        :meth:`release_executor`."""
        return self.comm.executor.claim()

    def release_executor(self) -> None:
        self.comm.executor.unclaim()

    def announce(self, kind: int, seq: int, spec: OpSpec, payload: object) -> None:
        """Send a mismatch notice about op ``seq`` to every other member."""
        body = msgpack.packb(payload)
        header = wire.pack(kind, spec.op, 0, 0, wire.INLINE, self.group_id, self.global_rank,
                            seq, -1, -1, 0)
        lost = self.lost_members()
        for member in self.members:
            if member != self.global_rank and member not in lost:
                self.comm.transport.send(member, header + body)

    # -- breaking -------------------------------------------------------------------------

    def check_usable(self, name: str, seq: int | None = None) -> None:
        """Raise if the group is broken, destroyed, or lost a member."""
        comm = self.comm
        if self._broken is None and not comm.closed and not comm.sentinel.lost and \
                self.group_id not in comm.mailbox.poison and not self._destroyed:
            return
        if self.comm.closed:
            from ringrt.errors import NotInitializedError

            raise NotInitializedError(f"{name}: the process group was destroyed")
        if self._destroyed:
            from ringrt.errors import NotInitializedError

            raise NotInitializedError(
                f"{name} on rank {self.global_rank}: subgroup {self.group_id} (ranks "
                f"{self.members}) was destroyed on this rank; create a new one with new_group")
        if self._broken is not None:
            raise self._broken
        poison = self.comm.mailbox.poison.get(self.group_id)
        if poison is not None:
            from ringrt.errors import CollectiveMismatchError

            _kind, origin, (detail, ranks) = poison
            self.break_with(CollectiveMismatchError(name, seq if seq is not None else self._seq,
                                                    ranks, self.global_rank,
                                                    f"rank {origin} reports: {detail}"))
            raise self._broken
        lost = self.lost_members()
        if lost:
            self.break_with_lost(lost)
            raise self.lost_error(lost, name, seq)

    def break_with(self, error: Exception) -> None:
        if self._broken is None:
            self._broken = error

    def break_with_lost(self, lost: dict) -> None:
        self.break_with(self.lost_error(lost, None, None))

    def lost_error(self, lost: dict, op: str | None, seq: int | None) -> PeerLostError:
        """The error naming the root cause: ranks that left or failed *because* others were
        lost (they said goodbye, or failed with PeerLostError) are mentioned, not blamed."""
        causes = {r for r, why in lost.items() if not _is_consequence(why)} or set(lost)
        reason = "; ".join(f"rank {r}: {why}" for r, why in sorted(lost.items()) if r in causes)
        others = sorted(set(lost) - causes)
        if others:
            reason += f" (ranks {others} have since left too)"
        return PeerLostError(causes, reason, self.global_rank, op, seq)

    # -- subgroups ------------------------------------------------------------------------

    def new_group(self, ranks: Sequence[int] | None, timeout: float | None,
                  barrier: Callable[[Any], Any]) -> ProcessGroup | NonMember:
        """Create a subgroup of the world (every rank must call this, in the same order).

        Returns a ProcessGroup on members and a :class:`NonMember` handle elsewhere.
        ``barrier(exchange)`` (an algorithm: the group layer does not import them) runs over
        the world with the members' digest in its signature, which checks that every rank
        asked for the same members.
        """
        members = sorted(set(range(self.size) if ranks is None else (int(r) for r in ranks)))
        bad = [r for r in members if not 0 <= r < self.world_size]
        if bad or not members:
            raise ValueError(f"new_group: ranks {bad or members} are not in [0, "
                             f"{self.world_size}) on rank {self.global_rank}")
        group_id = self.comm.next_group_id
        self.comm.next_group_id += 1
        digest = zlib.crc32(msgpack.packb(members))
        self.run(OpSpec("new_group", wire.OP_CODES["new_group"], count=digest), barrier)
        timeout = self.timeout if timeout is None else seconds(timeout)
        if self.global_rank not in members:
            return NonMember(group_id, members)
        return ProcessGroup._subgroup(self.comm, group_id, members, timeout)

    def new_member_group(self, members: Sequence[int], store: Any,
                         timeout: float | None = None) -> ProcessGroup:
        """Create a subgroup that only its members call (non-members never hear of it).

        torch builds a backend's group on member ranks only, so the members cannot count
        groups together as :meth:`new_group` does; they agree on the group's id through
        ``store`` instead, a store namespace private to this group that every member passes
        (torch hands each group its own prefix store). The lowest member draws the id from a
        job-wide counter in the world's store, above :meth:`new_group`'s ids, and publishes it
        there; the others read it. No message goes between ranks: data that reaches a member
        before it formed the group waits in its mailbox. Members that share a host agree
        on the group's shared memory through the world's store (``_comm/group_shm``), so a
        member returns once the others of its host formed the group too (torch's
        ``new_group`` is collective anyway).

        Args:
            members: global ranks of the group, this rank among them.
            store: set/get store (``get`` blocks until the key is set) private to the group.
            timeout: the group's op timeout (default: this group's).

        Raises:
            ValueError: ``members`` is empty, out of range, or lacks this rank.
            ringrt.errors.TimeoutError: the lowest member never published the id.
        """
        members = sorted(set(int(r) for r in members))
        global_rank, world = self.global_rank, self.world_size
        if not members or not 0 <= members[0] <= members[-1] < world or \
                global_rank not in members:
            raise ValueError(f"new_member_group: members {members} must be ranks in [0, {world})"
                             f" that include this rank ({global_rank})")
        timeout = self.timeout if timeout is None else seconds(timeout)
        if global_rank == members[0]:
            drawn = self.comm.store.add(f"{self.comm.namespace}/member_group_ids", 1)
            group_id = MEMBER_GROUP_IDS + drawn
            store.set("ringrt_group_id", str(group_id))
        else:
            group_id = int(store.get("ringrt_group_id", timeout=timeout))
        return ProcessGroup._subgroup(self.comm, group_id, members, timeout)

    def close(self, linger_s: float = 5.0, goodbye: bool = True) -> None:
        """Destroy the world group (closes sockets; subgroups die with it)."""
        self.comm.close(linger_s, goodbye)

    def destroy(self) -> None:
        """Leave this subgroup on this rank: its shared memory is unmapped here, and a later
        op on it raises. Sockets are the world's and stay. Safe to call twice; the world
        group is left with :meth:`close`."""
        if self.group_id == 0 or self._destroyed:
            return
        self._destroyed = True
        self.fast_paths.clear()
        for arena in (self.arena, self.host_arena):
            if arena is not None and arena in self.comm.group_arenas:
                self.comm.group_arenas.remove(arena)
                arena.close()
        self.arena = self.host_arena = None


def _payload_bytes(spec: OpSpec) -> int:
    dtype = wire.CODE_DTYPES.get(spec.dtype_code)
    return spec.count * dtype.itemsize if dtype is not None and spec.count > 0 else 0


def _is_consequence(why: str) -> bool:
    """A peer lost *because* others were: it said goodbye, or its announced failure (the
    text of its exception) was itself a PeerLostError."""
    return why.startswith(LEFT_REASON) or PeerLostError.__name__ in why


class NonMember:
    """What ``new_group`` returns on ranks outside the group (torch's NON_GROUP_MEMBER).

    Collectives called with it do nothing and return None, as in torch.
    """

    def __init__(self, group_id: int, members: list[int]):
        self.group_id = group_id
        self.members = members

    def __repr__(self) -> str:
        return f"NonMember(ranks={self.members})"


def default_namespace(restart_count: int, init_count: int) -> str:
    """Store key prefix for one rendezvous: restarts of a job (same launcher-hosted store) and
    repeated init_process_group calls in one process must not see each other's keys."""
    return f"ringrt/attempt{restart_count}/init{init_count}"
