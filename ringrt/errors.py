"""Exceptions raised by ringrt.

Every error a rank can see from the runtime derives from :class:`DistError`, so
``except ringrt.errors.DistError`` catches them all. Bad arguments are the exception: they
raise the builtin ``TypeError`` / ``ValueError`` (as torch does) on the rank that made the
mistake, before anything is sent and before the op is counted: a rejected call is a purely
local event, and the other ranks keep waiting for the corrected call (uncaught, the error ends
the rank, and the others raise :class:`PeerLostError` quoting it).

::

    DistError
     ├── NotInitializedError      (also RuntimeError) no process group yet / group destroyed
     ├── CollectiveMismatchError  ranks called different ops, or the same op differently
     ├── PeerLostError            a peer died, its link was cut, or it raised and exited
     ├── TimeoutError             (also builtins.TimeoutError) op or rendezvous too slow
     ├── StoreError               the rendezvous store refused or failed a request
     │    └── AuthenticationError wrong or missing RINGRT_TOKEN
     ├── ProtocolError            (also ValueError) bytes from a peer, the store or a card
     │                            are not a well-formed ringrt message
     └── CheckpointError          (also ValueError) a checkpoint on disk is truncated,
                                  corrupt, or not ringrt's

Every exception carries the fields its message is built from (``op``, ``seq``, ``ranks``,
``rank``), so tests and handlers can read them instead of parsing text.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

__all__ = [
    "DistError",
    "NotInitializedError",
    "CollectiveMismatchError",
    "PeerLostError",
    "TimeoutError",
    "StoreError",
    "AuthenticationError",
    "ProtocolError",
    "CheckpointError",
]


def _ranks_text(ranks: Iterable[int]) -> str:
    ranks = sorted(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


class DistError(Exception):
    """Base class of every ringrt runtime error."""


class NotInitializedError(DistError, RuntimeError):
    """A collective was called before ``init_process_group`` or after the group was destroyed."""


class CollectiveMismatchError(DistError):
    """Ranks disagree about a collective (different op, dtype, element count or root).

    Attributes:
        op: the op this rank called.
        seq: the op's sequence number in its group (0 for the first op).
        ranks: the group ranks whose call disagrees with this rank's.
        rank: the rank raising the error.
    """

    def __init__(self, op: str, seq: int, ranks: Iterable[int], rank: int, detail: str):
        self.op, self.seq, self.ranks, self.rank = op, seq, sorted(ranks), rank
        self.detail = detail
        super().__init__(
            f"collective mismatch on rank {rank} at op #{seq} ({op}): {detail}; disagreeing "
            f"{_ranks_text(self.ranks)}. Every rank of a group must call the same collectives "
            "in the same order with the same dtype, element count and root."
        )


class PeerLostError(DistError):
    """A peer died, stopped answering heartbeats, had its link cut, or raised and exited.

    The group that contains it is unusable afterwards: every later collective on it raises
    this error again.

    Attributes:
        ranks: the lost ranks (global ranks). reason: what was observed.
        rank: the rank raising. op, seq: the op in progress (None between ops).
    """

    def __init__(
        self,
        ranks: Iterable[int],
        reason: str,
        rank: int,
        op: str | None = None,
        seq: int | None = None,
    ):
        self.ranks, self.reason, self.rank, self.op, self.seq = sorted(ranks), reason, rank, op, seq
        where = "" if op is None else f" during {op}" + ("" if seq is None else f" (op #{seq})")
        super().__init__(
            f"{_ranks_text(self.ranks)} lost{where}, seen from rank {rank}: {reason}. "
            "The process group cannot be used any more; restart the job (ringrun --max-restarts "
            "restarts it for you)."
        )


class TimeoutError(DistError, builtins.TimeoutError):  # noqa: A001 - deliberate, see docstring
    """An op or rendezvous did not finish within its timeout.

    Subclasses the builtin ``TimeoutError`` too, so ``except TimeoutError`` works either way.

    Attributes:
        op, seq: what was being waited for. ranks: the ranks not heard from.
        timeout: the limit in seconds. rank: the rank raising.
    """

    def __init__(
        self,
        op: str,
        seq: int | None,
        ranks: Iterable[int],
        timeout: float | None,
        rank: int | None,
        hint: str = "",
    ):
        self.op, self.seq, self.ranks, self.timeout, self.rank = op, seq, sorted(ranks), timeout, rank
        number = f" (op #{seq})" if seq is not None else ""
        who = f" on rank {rank}" if rank is not None else ""
        silent = f"; not heard from: {_ranks_text(self.ranks)}" if self.ranks else ""
        super().__init__(
            f"{op}{number} timed out after {timeout or 0:g} s{who}{silent}."
            + (f" {hint}" if hint else "")
        )


class StoreError(DistError):
    """The rendezvous store could not serve a request (refused, unreachable, bad reply)."""


class AuthenticationError(StoreError):
    """The store refused this client: its RINGRT_TOKEN does not match the server's."""


class ProtocolError(DistError, ValueError):
    """Bytes that came from outside this process (a peer's message, a store frame, an address
    card, an object-collective payload) are not a well-formed ringrt message.

    Decoders raise it instead of whatever the parsing library raised, after checking every
    length the bytes claim against the bytes actually there; it subclasses ``ValueError``, which
    the internal frame errors raised before it existed.
    """


class CheckpointError(DistError, ValueError):
    """A checkpoint on disk cannot be read: a file is truncated or corrupt, the manifest is
    not ringrt's, or a shard the manifest names is missing or has another size.

    Subclasses ``ValueError``, which :func:`ringrt.checkpoint.load` raised before it existed.
    """
