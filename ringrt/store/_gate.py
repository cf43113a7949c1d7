"""The store server's gatekeeper: the token handshake and who has passed it (no sockets).

The handshake itself is described in ``_protocol``.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from ringrt.store import _protocol as proto

_MAX_PENDING_HANDSHAKES = 1024  # hello without auth yet; the oldest is forgotten first
_MAX_TRUSTED = 1 << 16         # authenticated identities remembered; the oldest is forgotten first


class _Session:
    """An authenticated connection: its sealing key and the last request id it used."""

    __slots__ = ("key", "last_request")

    def __init__(self, key: bytes):
        self.key, self.last_request = key, 0


class _Gatekeeper:
    """Runs the token handshake (see ``_protocol``) and remembers who passed it.

    Identities are the ones the ROUTER assigns; libzmq refuses peer-chosen identities that
    start with a zero byte, so a peer cannot claim another connection's assigned identity.
    Each authenticated identity holds a :class:`_Session` that seals its frames.
    """

    def __init__(self, token: str):
        self._token = token
        self._pending: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self._trusted: OrderedDict[bytes, _Session] = OrderedDict()
        self.clients = 0   # successful authentications so far

    def trusts(self, identity: bytes) -> bool:
        """True once ``identity`` has completed the handshake."""
        return identity in self._trusted

    def session(self, identity: bytes) -> _Session | None:
        """The session of an authenticated identity, else None."""
        return self._trusted.get(identity)

    def hello(self, identity: bytes, client_nonce: bytes) -> list:
        """Answers a hello: a fresh server nonce and the proof over the client's nonce."""
        server_nonce = os.urandom(proto.NONCE_BYTES)
        _remember(self._pending, identity, (client_nonce, server_nonce), _MAX_PENDING_HANDSHAKES)
        self._trusted.pop(identity, None)   # a new hello starts a new session
        return [server_nonce, proto.server_proof(self._token, client_nonce, server_nonce)]

    def verify(self, identity: bytes, proof: bytes) -> str | None:
        """Checks the client's proof over the server nonce sent to ``identity``.

        Returns:
            None when it holds the token (its session starts), else the reason it is refused.
        """
        nonces = self._pending.pop(identity, None)
        if nonces is None:   # never said hello, or evicted by a flood of hellos
            return "no handshake in progress on this connection; send hello first"
        client_nonce, server_nonce = nonces
        expected = proto.client_proof(self._token, server_nonce, client_nonce)
        if not proto.proofs_match(expected, proof):
            return proto.AUTH_FAILED
        key = proto.session_key(self._token, client_nonce, server_nonce)
        _remember(self._trusted, identity, _Session(key), _MAX_TRUSTED)
        self.clients += 1
        return None

    def seal(self, identity: bytes, frame: bytes) -> bytes:
        """A reply to ``identity``: sealed when it has a session, else plain (handshake)."""
        session = self._trusted.get(identity)
        return frame if session is None else proto.seal(session.key, proto.TO_CLIENT, frame)


def _remember(table: OrderedDict, key, value, cap: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > cap:
        table.popitem(last=False)
