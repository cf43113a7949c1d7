"""CurveZMQ encryption with keys derived from the job token (``encrypt=True``).

Every rank knows ``RINGRT_TOKEN``, so every rank can derive the same two Curve25519 key
pairs from it: one for the listening side of every socket (store, inboxes, heartbeats) and
one for the connecting side. The server's public key is never sent anywhere, and a client
must know it to complete the CurveZMQ handshake — so only holders of the token can connect,
and everything on the wire is encrypted and authenticated (XSalsa20-Poly1305).

Shared memory between ranks of one host is not a network and is not encrypted.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import zmq
from zmq.utils import z85


@dataclass(frozen=True)
class CurveKeys:
    """Z85-encoded key pairs for the listening (server) and connecting (client) sides."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes


def derive_keys(token: str) -> CurveKeys:
    """Derive both key pairs from the job token.

    Raises:
        ValueError: no token (there would be nothing secret to derive keys from), or this
            libzmq was built without CURVE support.
    """
    if not token:
        raise ValueError("encryption needs a shared secret: set RINGRT_TOKEN on every rank "
                         "(ringrun sets a fresh one per job)")
    if not zmq.has("curve"):
        raise ValueError("this libzmq has no CURVE support, so encrypt=True cannot work; "
                         "install a pyzmq wheel (they bundle libsodium)")

    def secret(label: bytes) -> bytes:
        return z85.encode(hmac.new(token.encode(), b"ringrt-curve-v1/" + label,
                                   hashlib.sha256).digest())

    server_secret, client_secret = secret(b"server"), secret(b"client")
    return CurveKeys(zmq.curve_public(server_secret), server_secret,
                     zmq.curve_public(client_secret), client_secret)


def serve(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    """Make a binding socket a CURVE server (call before ``bind``); no-op without keys."""
    if keys is not None:
        sock.curve_server = True
        sock.curve_secretkey = keys.server_secret
        sock.curve_publickey = keys.server_public


def connect_as_client(sock: zmq.Socket, keys: CurveKeys | None) -> None:
    """Make a connecting socket a CURVE client (call before ``connect``); no-op without keys."""
    if keys is not None:
        sock.curve_serverkey = keys.server_public
        sock.curve_publickey = keys.client_public
        sock.curve_secretkey = keys.client_secret
