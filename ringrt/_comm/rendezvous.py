"""How ranks find each other through the store: address cards, a nonce, a gate, shared memory.

Every rank publishes an *address card* under the job attempt's namespace and reads everyone
else's. Cards are exchanged in up to two rounds so that a rank listens only where a peer
needs it (less to attack): round one carries the host identity, the ipc addresses and the
shared-memory segment; only if it shows ranks on more than one host (or the job forces
``RINGRT_TRANSPORT=tcp``) does every rank bind its tcp sockets and publish them in round two.
The last rank in opens the gate, after which rank 0 may drop the store.

Cards are signed with the job token (HMAC over the key they are published under and their
bytes): ringrt's own store already admits only token holders, but the store torch hands the
backend under torchrun is an unauthenticated TCPStore, where anyone on the machine could
otherwise swap a card and have ranks send their data to an address of theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import msgpack

from ringrt._deadline import Deadline
from ringrt.errors import DistError, ProtocolError, TimeoutError

NONCE_BYTES = 16


def job_nonce(store, namespace: str) -> bytes:
    """A random nonce every rank of this rendezvous agrees on (the first writer wins)."""
    return store.compare_set(f"{namespace}/nonce", b"", os.urandom(NONCE_BYTES))


def _signature(token: str, key: str, body: bytes) -> bytes:
    return hmac.new(token.encode(), b"ringrt-card-v1/" + key.encode() + b"\0" + body,
                    hashlib.sha256).digest()


def _seal_card(token: str, key: str, card: dict) -> bytes:
    body = msgpack.packb(card)
    return msgpack.packb([body, _signature(token, key, body)])


def _open_card(token: str, key: str, raw: bytes, rank: int, peer: int) -> dict:
    try:
        body, signature = msgpack.unpackb(raw)
        genuine = hmac.compare_digest(signature, _signature(token, key, body))
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        genuine = False
    if not genuine:
        raise DistError(
            f"rank {rank}: rank {peer}'s address card ({key}) is not signed with this job's "
            "token: the ranks disagree about RINGRT_TOKEN, or someone wrote into the store "
            "(torch's TCPStore under torchrun is not authenticated; ringrun's store is)")
    try:
        card = msgpack.unpackb(body)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        card = exc
    if not (isinstance(card, dict) and all(type(k) is str for k in card)):
        raise _malformed(rank, peer, key, "it is not a map of fields")
    return card


def _malformed(rank: int, peer: int, key: str, what: str) -> ProtocolError:
    return ProtocolError(
        f"rank {rank}: rank {peer}'s address card ({key}) is signed with this job's token but "
        f"{what}: do all ranks run the same ringrt version?")


_MAYBE_NONE = ("shm",)      # a rank that could not make a segment publishes None


def _check_fields(theirs: dict, ours: dict, rank: int, peer: int, key: str) -> None:
    """A peer's card has our card's fields, of the same kinds (``shm`` may be a map on one
    rank and None on another), and a data card names its host."""
    for name, mine in ours.items():
        kinds = (dict, type(None)) if name in _MAYBE_NONE else (type(mine),)
        if name not in theirs or not isinstance(theirs[name], kinds):
            raise _malformed(rank, peer, key, f"its field {name!r} is missing or not a "
                                              f"{' or '.join(k.__name__ for k in kinds)}")
    data = theirs.get("data")
    if isinstance(data, dict) and "host" in ours.get("data", {}) \
            and not isinstance(data.get("host"), str):
        raise _malformed(rank, peer, key, "it names no host")


def exchange_cards(store, prefix: str, rank: int, world_size: int, card: dict,
                   deadline: Deadline, token: str = "") -> dict[int, dict]:
    """Publish this rank's card under ``prefix`` and collect everyone's: rank -> card.

    Raises:
        TimeoutError: some rank never published (named in the error).
        ValueError: ranks disagree about the world size.
        DistError: a card is not signed with ``token``.
        ProtocolError: a card is signed but has other fields than this rank's.
    """
    own = f"{prefix}/{rank}"
    store.set(own, _seal_card(token, own, {"world_size": world_size, **card}))
    keys = [f"{prefix}/{r}" for r in range(world_size)]
    try:
        store.wait(keys, timeout=deadline.remaining())
    except TimeoutError as exc:
        missing = [r for r, key in enumerate(keys) if not store.check([key])]
        raise TimeoutError(
            "rendezvous", None, missing, deadline.timeout, rank,
            hint=f"Ranks {missing} never joined the store at {store.host}:{store.port}; check "
                 "that every rank was started with the same MASTER_ADDR/MASTER_PORT and "
                 "WORLD_SIZE.",
        ) from exc
    cards = {r: _open_card(token, keys[r], store.get(keys[r], timeout=deadline.remaining()),
                           rank, r) for r in range(world_size)}
    mine = {"world_size": world_size, **card}
    for r, theirs in cards.items():
        _check_fields(theirs, mine, rank, r, keys[r])
    sizes = {r: c["world_size"] for r, c in cards.items() if c["world_size"] != world_size}
    if sizes:
        raise ValueError(f"rank {rank} has WORLD_SIZE={world_size} but ranks {sorted(sizes)} "
                         f"have {sorted(set(sizes.values()))}; start every rank with the same")
    return cards


def open_gate(store, namespace: str, world_size: int, deadline: Deadline) -> None:
    """Wait until every rank has read every card (so rank 0 may drop the store afterwards)."""
    if store.add(f"{namespace}/joined", 1) == world_size:
        store.set(f"{namespace}/go", b"1")
    store.get(f"{namespace}/go", timeout=deadline.remaining())


def share_memory(arena, cards, store, namespace, rank, deadline):
    """The world arena: map every peer's shared-memory segment if all ranks are on this host
    and all could make one (see :func:`_settle_arena`); the segments come in the address
    cards."""
    one_host = len({c["data"]["host"] for c in cards.values()}) == 1
    segments = {r: c["shm"] for r, c in cards.items()}
    return _settle_arena(arena, segments, store, f"{namespace}/shm", range(len(cards)), rank,
                         deadline, reachable=one_host)


def agree_on_arena(arena, local: list[int], rank: int, store, prefix: str,
                   deadline: Deadline, token: str):
    """Map the segments of the ranks ``local`` (global ranks; arena index = position) and
    return ``arena``, or None on every one of them if any could not make or map its own
    (``arena`` None here: shared memory off or no room). Cards go through ``store`` under
    ``prefix``, signed with the job ``token`` (a host's arena, a subgroup's: see
    ``host_shm``, ``group_shm``); then as :func:`_settle_arena`.
    """
    key = f"{prefix}/card/{rank}"
    store.set(key, _seal_card(token, key, {"card": arena.card if arena else None}))
    segments = {}
    for position, peer in enumerate(local):
        peer_key = f"{prefix}/card/{peer}"
        raw = store.get(peer_key, timeout=deadline.remaining())
        segments[position] = _open_card(token, peer_key, raw, rank, peer)["card"]
    return _settle_arena(arena, segments, store, f"{prefix}/ok", local, rank, deadline)


def _settle_arena(arena, segments: dict, store, prefix: str, voters, rank: int,
                  deadline: Deadline, reachable: bool = True):
    """Attach, vote, unlink: ``arena`` maps ``segments`` (arena index -> segment card; None:
    that rank has none) unless they are not ``reachable`` (on other hosts); every one of
    ``voters`` (global ranks) publishes under ``prefix`` whether it could, and the arena is
    kept only if all could (every rank must agree, so the outcome goes through the store).
    Its segment is unlinked either way: every peer mapped it (or will not), so nothing is
    left in /dev/shm; an arena not kept is closed."""
    usable = arena is not None and reachable and all(segments.values())
    if usable:
        try:
            arena.attach(segments)
        except OSError:
            usable = False
    store.set(f"{prefix}/{rank}", b"1" if usable else b"0")
    keys = [f"{prefix}/{voter}" for voter in voters]
    store.wait(keys, timeout=deadline.remaining())
    everyone = all(store.get(k, timeout=deadline.remaining()) == b"1" for k in keys)
    if arena is not None:
        arena.unlink()
        if not everyone:
            arena.close()
    return arena if everyone else None
