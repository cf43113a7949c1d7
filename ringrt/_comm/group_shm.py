"""Shared memory for subgroups: an arena per group, its slots sized on first use.

The world arena (a ``shm.ShmArena``) gives every rank a 16 MiB slot up front. A job may create
dozens of subgroups (a 16-rank 2-D DeviceMesh, ``split_group``), so a subgroup's arena starts
with the control block alone (4 KiB a member: tickets, published op, slot record) and grows
its slot when an op needs more than it has (:meth:`GroupArena.grow`):

- every rank of the group calls it at the same step of the same op, with the same size (the
  algorithms compute it from the op's arguments, which every rank agrees on);
- each rank creates a new segment of the new size (0600, ``posix_fallocate``), writes its name
  and whether that worked into its control block's *slot record*, and takes a phase;
- each maps the peers' new segments (checked private, as every segment is), writes whether
  that worked, and takes a second phase; each unlinks its own new segment's name (nothing is
  left in ``/dev/shm``: a rank killed in between leaves a ``ringrt-PID-...`` name, which the
  next job sweeps, ``stale.py``);
- every rank reads the records and takes a third phase (so none is rewritten by the next
  growth before all have read it); if any rank failed, every rank keeps its old slot and
  raises.

A slot never shrinks, grows at least twofold (a few growths in a job), and never beyond
``RINGRT_SHM_GROUP_SLOT_BYTES`` (default: the world's slot size, 16 MiB). See docs/groups.md
for the bound per group and per job.

A group whose members all share a host gets one arena over all of them (indexed by group
rank), and runs its collectives on it as the world group does on the world arena. A group
spanning hosts gets, on each host with two or more of its members, an arena over those
(indexed by local index) for the inside-the-host steps of the two-level collectives
(``ringrt._algorithms.hierarchical``), as the world group uses ``host_shm``'s.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from ringrt._comm.rendezvous import agree_on_arena
from ringrt._comm import shm_files
from ringrt._comm.shm import (
    CONTROL_BYTES,
    SLOT_RECORD_AT,
    ShmArena,
    map_private,
)
from ringrt._deadline import Deadline
from ringrt._settings import Settings
from ringrt.errors import DistError

GROWTH_QUANTUM = 64 << 10            # slot sizes are multiples of this
_RECORD = struct.Struct("<qq48s")    # slot bytes, status (1 ok, 0 failed), path or why not
_OK, _FAILED = 1, 0


def group_slot_limit(settings: Settings) -> int:
    """The most slot bytes a group's rank may map (``RINGRT_SHM_GROUP_SLOT_BYTES``)."""
    limit = settings.shm_group_slot_bytes
    return max(GROWTH_QUANTUM, settings.shm_slot_bytes if limit is None else limit)


def _slot_path() -> str:
    """A fresh path for a grown slot (short: at most 31 bytes with its slash)."""
    return shm_files.new_path("-s")


class GroupArena(ShmArena):
    """A subgroup's arena: control blocks mapped at creation, slots grown on use."""

    growable = True

    def __init__(self, rank: int, world_size: int, p2p_bytes: int = 0,
                 settings: Settings | None = None):
        super().__init__(rank, world_size, p2p_bytes=0, slot_bytes=0, settings=settings)
        self.limit = group_slot_limit(self.settings)
        self.slot_maps: dict[int, object] = {}      # rank -> mapping of its grown slot

    @property
    def slot_limit(self) -> int:
        return self.limit

    def mapped_bytes(self) -> int:
        """Bytes of shared memory this rank maps for the group (every member's segments)."""
        return len(self.segments) * (CONTROL_BYTES + self.slot_bytes)

    def grow(self, op, slot_bytes: int) -> None:
        """Give every rank's slot at least ``slot_bytes`` (see the module docstring).

        Raises:
            DistError: some rank could not make or map a segment (on every rank).
        """
        if self.slot_bytes >= self.limit:
            return                 # as big as it gets: the op takes more, smaller pieces
        size = min(self.limit, max(slot_bytes, 2 * self.slot_bytes))
        size = -(-size // GROWTH_QUANTUM) * GROWTH_QUANTUM
        path, mapping, maps = _slot_path(), None, {}
        try:
            try:
                mapping = map_private(path, size, create=True)
                self._write_record(size, _OK, path)
            except OSError as exc:
                self._write_record(size, _FAILED, str(exc)[:48])
            op.phase()
            if self._all_ok(size):            # else some rank failed: its record says why
                maps = self._map_peers(size)
            op.phase()
            grown = self._all_ok(size)
            failure = None if grown else self._failure(op, size)
            op.phase()          # everyone has read the records: the next growth may rewrite
            if not grown:
                raise DistError(failure)
        except BaseException:
            for unused in [mapping, *maps.values()]:
                if unused is not None:
                    unused.close()
            raise
        finally:
            if mapping is not None:
                shm_files.unlink(path)
        maps[self.rank] = mapping
        self._swap_in(maps, size)

    def _write_record(self, size: int, status: int, text: str) -> None:
        _RECORD.pack_into(self.own.map, SLOT_RECORD_AT, size, status, text.encode()[:48])

    def _record(self, peer: int) -> tuple[int, int, str]:
        size, status, text = _RECORD.unpack_from(self.segments[peer].map, SLOT_RECORD_AT)
        return size, status, text.rstrip(b"\0").decode(errors="replace")

    def _all_ok(self, size: int) -> bool:
        return all(self._record(q)[:2] == (size, _OK) for q in self.segments)

    def _map_peers(self, size: int) -> dict:
        """Map every peer's new slot; on a failure, say so in our record (a status only
        ever goes from ok to failed, so every rank reads the same outcome after the next
        phase)."""
        maps = {}
        for peer in self.segments:
            if peer != self.rank:
                try:
                    maps[peer] = map_private(self._record(peer)[2], size, create=False)
                except OSError as exc:
                    self._write_record(size, _FAILED, f"mapping {peer}'s: {exc}"[:48])
                    break
        return maps

    def _failure(self, op, size: int) -> str:
        failed = [(q, self._record(q)[2]) for q in self.segments if self._record(q)[1] != _OK]
        said = "; ".join(f"rank index {q}: {text}" for q, text in failed)
        where = shm_files.SHM_DIR
        return (f"a group's shared memory could not grow to {size} bytes a rank ({said}), "
                f"seen on group rank {op.rank}; free space in {where} (df {where}; Docker: "
                "--shm-size), lower RINGRT_SHM_GROUP_SLOT_BYTES, or set RINGRT_NO_SHM=1")

    def _swap_in(self, maps: dict, size: int) -> None:
        self.half_views_made.clear()           # views of the old slots
        for peer, mapping in maps.items():
            old = self.slot_maps.get(peer)
            self.segments[peer].slot = np.frombuffer(mapping, np.uint8, size)
            self.slot_maps[peer] = mapping
            if old is not None:
                try:
                    old.close()
                except BufferError:       # a view still refers to it; it dies with that
                    pass
        self.slot_bytes = size

    def close(self) -> None:
        super().close()
        for mapping in self.slot_maps.values():
            try:
                mapping.close()
            except BufferError:
                pass
        self.slot_maps.clear()


def group_arenas(comm, group_id: int, members: list[int], timeout: float
                 ) -> tuple[GroupArena | None, GroupArena | None]:
    """A new subgroup's (arena, host_arena): an arena over every member when they all
    share this rank's host, else one over this host's members for the two-level
    collectives; None where fewer than two members share this host or shared memory is
    off or short (every rank concerned agrees, through the store)."""
    hosts = comm.hosts
    local = [m for m in members if hosts[m] == hosts[comm.rank]]
    if len(local) < 2:
        return None, None
    arena = GroupArena.create(local.index(comm.rank), len(local), settings=comm.settings)
    if arena is not None:
        on_host = sum(1 for host in hosts.values() if host == hosts[comm.rank])
        arena.oversubscribed = on_host > (os.cpu_count() or 1)
    arena = agree_on_arena(arena, local, comm.rank, comm.store,
                           f"{comm.namespace}/group{group_id}/shm", Deadline(timeout),
                           comm.guard.security.token)
    if arena is not None:
        comm.group_arenas.append(arena)
    spans_hosts = len({hosts[m] for m in members}) > 1
    return (None, arena) if spans_hosts else (arena, None)
