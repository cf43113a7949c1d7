"""Wire format of the rendezvous store: msgpack frames, ops, statuses and the token handshake.

Every message is one msgpack frame (never pickle: frames come from the network). A request is
``[request_id, op, args]`` and its reply ``[request_id, status, payload]``; the id lets a client
drop the late reply to a request it already gave up on.

The handshake is a mutual HMAC-SHA256 challenge-response keyed by the job token, so the token
never crosses the wire and each side proves it holds it::

    client -> server  [id, "hello", [client_nonce, PROTOCOL_VERSION]]
    server -> client  [id, "ok", [server_nonce, server_proof, max_frame_bytes]]
    client -> server  [id, "auth", [client_proof]]     (b"" when server_proof was wrong)
    server -> client  [id, "ok", None] or [id, "auth_failed", reason]

    server_proof = HMAC(token, b"ringrt-store/server" + client_nonce + server_nonce)
    client_proof = HMAC(token, b"ringrt-store/client" + server_nonce + client_nonce)

Distinct role labels stop a proof from being reflected back to its sender; nonces have a fixed
length, so the concatenations are unambiguous.

After the handshake every frame of the session, both ways, is *sealed*: a ``0xc1`` byte
(never the first byte of a msgpack value), a 16-byte tag, then the msgpack frame::

    session_key = HMAC(token, b"ringrt-store/session" + client_nonce + server_nonce)
    tag         = HMAC(session_key, direction + frame)[:16]     direction: b"c>s" or b"s>c"

and the server accepts a session's request ids only in increasing order. So a man in the
middle of an authenticated connection cannot inject, alter or replay a request or a reply,
and a frame cannot be spliced into another connection (its key differs); a plain frame on an
authenticated connection is refused. Handshake frames stay plain.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any

import msgpack
import zmq

from ringrt.errors import ProtocolError

PROTOCOL_VERSION = 1
NONCE_BYTES = 32
DEFAULT_MAX_FRAME_BYTES = 16 << 20
MAX_WAIT_SECONDS = 7 * 24 * 3600.0   # longest get/wait the server parks (a week)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Reply statuses.
OK = "ok"
TIMEOUT = "timeout"          # a parked get/wait expired before its keys were set
ERROR = "error"              # the request was understood but refused (payload: reason)
REFUSED = "refused"          # the sender has not authenticated
AUTH_FAILED = "auth_failed"  # the sender's proof was wrong (different token)

# Socket-monitor events for a peer that failed the ZMTP handshake (not ZeroMQ, or the other
# side alone encrypts); the client reports them, the server's ledger counts them.
HANDSHAKE_FAILED_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)

_SERVER_ROLE = b"ringrt-store/server"
_CLIENT_ROLE = b"ringrt-store/client"
_SESSION_ROLE = b"ringrt-store/session"
SEALED = b"\xc1"             # msgpack never starts a value with 0xc1 ("never used")
TAG_BYTES = 16
TO_SERVER, TO_CLIENT = b"c>s", b"s>c"


class MalformedFrame(ProtocolError):
    """A frame from the network is not a well-formed store message."""


def encode(request_id: int, kind: str, body: Any) -> bytes:
    """Packs one request ``[id, op, args]`` or reply ``[id, status, payload]`` into a frame."""
    return msgpack.packb([request_id, kind, body], use_bin_type=True)


def decode(frame: bytes) -> tuple[int, str, Any]:
    """Unpacks a frame into ``(request_id, op_or_status, body)``.

    Raises:
        MalformedFrame: the frame is not msgpack, or not a ``[uint63, str, any]`` list.
    """
    try:
        message = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: msgpack raises many kinds
        raise MalformedFrame(f"not msgpack ({type(exc).__name__})") from exc
    if not (isinstance(message, list) and len(message) == 3):
        raise MalformedFrame("not a [request_id, op, body] list")
    request_id, kind, body = message
    if type(request_id) is not int or not 0 <= request_id <= INT64_MAX:
        raise MalformedFrame("request id is not a non-negative int64")
    if type(kind) is not str:
        raise MalformedFrame("op/status is not a string")
    return request_id, kind, body


def server_proof(token: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The server's proof that it holds ``token``, bound to the client's challenge."""
    return _proof(token, _SERVER_ROLE, client_nonce, server_nonce)


def client_proof(token: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """The client's proof that it holds ``token``, bound to the server's challenge."""
    return _proof(token, _CLIENT_ROLE, server_nonce, client_nonce)


def _proof(token: str, role: bytes, challenge: bytes, own_nonce: bytes) -> bytes:
    return hmac.new(token.encode(), role + challenge + own_nonce, hashlib.sha256).digest()


def session_key(token: str, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The key that seals one authenticated session's frames (both sides derive it)."""
    return _proof(token, _SESSION_ROLE, client_nonce, server_nonce)


def seal(key: bytes, direction: bytes, frame: bytes) -> bytes:
    """``frame`` with its tag: only a holder of the session key can make it."""
    tag = hmac.new(key, direction + frame, hashlib.sha256).digest()[:TAG_BYTES]
    return SEALED + tag + frame


def is_sealed(frame: bytes) -> bool:
    return frame[:1] == SEALED


def unseal(key: bytes, direction: bytes, sealed: bytes) -> bytes | None:
    """The frame inside ``sealed``, or None if its tag does not verify (forged or altered)."""
    if len(sealed) <= 1 + TAG_BYTES or not is_sealed(sealed):
        return None
    tag, frame = sealed[1:1 + TAG_BYTES], sealed[1 + TAG_BYTES:]
    expected = hmac.new(key, direction + frame, hashlib.sha256).digest()[:TAG_BYTES]
    return frame if hmac.compare_digest(tag, expected) else None


def proofs_match(expected: bytes, got: Any) -> bool:
    """Constant-time comparison of a proof from the network with the expected one."""
    return isinstance(got, bytes) and hmac.compare_digest(expected, got)


# --- argument shapes, checked by the server before any op runs -------------------------


def is_str(value: Any) -> bool:
    return type(value) is str


def is_bytes(value: Any) -> bool:
    return type(value) is bytes


def is_nonce(value: Any) -> bool:
    return type(value) is bytes and len(value) == NONCE_BYTES


def is_int64(value: Any) -> bool:
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def is_wait_seconds(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and 0 <= value <= MAX_WAIT_SECONDS


def is_key_list(value: Any) -> bool:
    return isinstance(value, list) and all(type(key) is str for key in value)


# op -> predicates for its positional args.
ARG_SHAPES: dict[str, tuple] = {
    "hello": (is_nonce, is_int64),
    "auth": (is_bytes,),
    "set": (is_str, is_bytes),
    "get": (is_str, is_wait_seconds),
    "add": (is_str, is_int64),
    "compare_set": (is_str, is_bytes, is_bytes),
    "wait": (is_key_list, is_wait_seconds),
    "check": (is_key_list,),
    "delete_key": (is_str,),
    "num_keys": (),
}


def args_fit(op: str, args: Any) -> bool:
    """True when ``op`` is known and ``args`` is a list matching its shape."""
    shape = ARG_SHAPES.get(op)
    if shape is None or not isinstance(args, list) or len(args) != len(shape):
        return False
    return all(fits(arg) for fits, arg in zip(shape, args))


def tcp_endpoint(host: str, port: int) -> str:
    """``tcp://host:port``, with IPv6 literals bracketed."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def configure(sock: zmq.Socket, host: str, max_frame_bytes: int) -> None:
    """Socket options shared by the server's ROUTER and the clients' DEALERs.

    MAXMSGSIZE makes libzmq close a connection whose frame header claims more than the cap
    before buffering it. Heartbeats (ZMTP PING) detect a peer that vanished without a FIN
    (host crash, cable pulled) within HEARTBEAT_TIMEOUT. A short LINGER keeps close() bounded
    while still flushing a last reply.
    """
    sock.setsockopt(zmq.LINGER, 500)
    sock.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
    sock.setsockopt(zmq.SNDHWM, 64)
    sock.setsockopt(zmq.RCVHWM, 64)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 5_000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 30_000)
    if ":" in host:
        sock.setsockopt(zmq.IPV6, 1)
