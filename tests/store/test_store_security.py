"""Store authentication and robustness against hostile bytes (tier 2, one process).

Every hostile input is followed by a check that the server counted it and that a fresh,
honest client still rendezvouses.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import msgpack
import pytest
import zmq

from ringrt._deadline import Deadline
from ringrt.errors import AuthenticationError, StoreError
from ringrt.store import Store
from ringrt.store import _protocol as proto
from tests.store._util import HOST, TOKEN, eventually, wait_for_growth

pytestmark = pytest.mark.timeout(30)

# ZMTP 3.0 greeting of a NULL-mechanism client: signature, version, mechanism, as-server, filler.
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)


def _ready_command() -> bytes:
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    return b"\x04" + bytes([len(body)]) + body


def _huge_frame_header() -> bytes:
    return b"\x02" + struct.pack(">Q", 2**62)   # LONG flag, then a 2**62-byte length claim


def assert_still_serves(server) -> None:
    """A fresh client authenticates, sets and gets."""
    with Store(HOST, server.port, TOKEN, timeout=5) as client:
        client.set("alive", b"yes")
        assert client.get("alive") == b"yes"


def _read_exactly(raw: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = raw.recv(size - len(data))
        assert chunk, "server closed the connection during the ZMTP handshake"
        data += chunk
    return data


def _server_hangs_up(raw: socket.socket, wait: float) -> bool:
    """Reads until the server closes the connection (True), or ``wait`` s of silence (False)."""
    raw.settimeout(wait)
    try:
        while raw.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return True


# --- authentication ---------------------------------------------------------------------


def test_wrong_token_is_refused_and_the_server_keeps_serving(server):
    before = server.stats()
    with pytest.raises(AuthenticationError) as caught:
        Store(HOST, server.port, "not-the-token", timeout=5, rank=2)
    message = str(caught.value)
    assert "authentication" in message and "RINGRT_TOKEN" in message
    assert "rank 2" in message and f"{HOST}:{server.port}" in message
    assert "ringrun" in message
    assert isinstance(caught.value, StoreError)
    wait_for_growth(server, before, "auth_failures")
    assert server.stats()["clients"] == before["clients"]
    assert_still_serves(server)


def test_wrong_token_from_the_environment_is_refused(monkeypatch, server):
    monkeypatch.setenv("RINGRT_TOKEN", "stale-token-from-another-job")
    with pytest.raises(AuthenticationError, match="RINGRT_TOKEN"):
        Store(HOST, server.port, timeout=5)


class _Impostor:
    """A bare ROUTER playing the store server by hand, with a real Store client talking to it
    on a thread: ``outcome`` gets ``client_call(store)``'s result or exception."""

    def __init__(self, client_call, timeout: float = 5):
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.rcvtimeo = 10_000  # a client that never writes fails instead of hanging
        port = self.router.bind_to_random_port(f"tcp://{HOST}")
        self.outcome: list = []

        def client():
            try:
                with Store(HOST, port, TOKEN, timeout=timeout) as store:
                    self.outcome.append(client_call(store))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                self.outcome.append(exc)

        self.thread = threading.Thread(target=client)
        self.thread.start()

    def __enter__(self) -> zmq.Socket:
        return self.router

    def __exit__(self, *exc_info) -> None:
        self.thread.join(timeout=10)
        self.router.close(linger=0)
        self.context.term()


def test_client_proves_nothing_to_a_server_without_the_token():
    """An impostor server (wrong token) gets an empty proof, and never sees the token."""
    seen: list[bytes] = []
    impostor = _Impostor(lambda store: None)
    with impostor as router:
        identity, hello = router.recv_multipart()
        seen.append(hello)
        request_id, _, (client_nonce, _) = proto.decode(hello)
        fake = [b"n" * proto.NONCE_BYTES, b"p" * 32, proto.DEFAULT_MAX_FRAME_BYTES]
        router.send_multipart([identity, proto.encode(request_id, proto.OK, fake)])
        identity, auth = router.recv_multipart()
        seen.append(auth)
        auth_id, op, args = proto.decode(auth)
        router.send_multipart([identity, proto.encode(auth_id, proto.OK, None)])
    assert op == "auth" and args == [b""]
    errors = impostor.outcome
    assert len(errors) == 1 and isinstance(errors[0], AuthenticationError)
    assert not any(TOKEN.encode() in frame for frame in seen)


def test_unauthenticated_request_is_refused_and_counted(server, store):
    before = server.stats()
    with _dealer(server.port) as dealer:
        dealer.send(proto.encode(7, "set", ["stolen", b"x"]))
        assert proto.decode(_recv(dealer)) == (7, proto.REFUSED, "authenticate first")
    assert server.stats()["refused"] == before["refused"] + 1
    assert not store.check(["stolen"])
    assert_still_serves(server)


def test_auth_without_hello_is_refused(server):
    before = server.stats()
    with _dealer(server.port) as dealer:
        dealer.send(proto.encode(1, "auth", [b"x" * 32]))
        request_id, status, reason = proto.decode(_recv(dealer))
        assert (request_id, status) == (1, proto.ERROR) and "hello" in reason
        dealer.send(proto.encode(2, "num_keys", []))
        assert proto.decode(_recv(dealer))[1] == proto.REFUSED
    stats = server.stats()
    assert stats["refused"] == before["refused"] + 2
    assert stats["auth_failures"] == before["auth_failures"]


def test_wrong_proof_is_an_authentication_failure(server):
    before = server.stats()
    with _dealer(server.port) as dealer:
        dealer.send(proto.encode(1, "hello", [b"c" * proto.NONCE_BYTES, proto.PROTOCOL_VERSION]))
        assert proto.decode(_recv(dealer))[1] == proto.OK
        dealer.send(proto.encode(2, "auth", [b"x" * 32]))
        assert proto.decode(_recv(dealer))[:2] == (2, proto.AUTH_FAILED)
    assert server.stats()["auth_failures"] == before["auth_failures"] + 1


def test_old_protocol_version_is_told_so(server):
    with _dealer(server.port) as dealer:
        dealer.send(proto.encode(1, "hello", [b"c" * proto.NONCE_BYTES, 0]))
        request_id, status, reason = proto.decode(_recv(dealer))
    assert status == proto.ERROR and "protocol 0 unsupported" in reason


def test_proof_for_one_connection_does_not_authenticate_another(server):
    with _dealer(server.port) as first, _dealer(server.port) as second:
        nonce = b"c" * proto.NONCE_BYTES
        first.send(proto.encode(1, "hello", [nonce, proto.PROTOCOL_VERSION]))
        server_nonce = proto.decode(_recv(first))[2][0]
        proof = proto.client_proof(TOKEN, server_nonce, nonce)
        second.send(proto.encode(1, "auth", [proof]))   # replayed on another connection
        assert proto.decode(_recv(second))[1] == proto.ERROR
        second.send(proto.encode(2, "hello", [nonce, proto.PROTOCOL_VERSION]))
        assert proto.decode(_recv(second))[1] == proto.OK
        second.send(proto.encode(3, "auth", [proof]))   # ...even after its own hello
        assert proto.decode(_recv(second))[1] == proto.AUTH_FAILED
        first.send(proto.encode(2, "auth", [proof]))
        key = proto.session_key(TOKEN, nonce, server_nonce)
        assert proto.decode(_open(key, _recv(first)))[1] == proto.OK
        first.send(proto.seal(key, proto.TO_SERVER, proto.encode(3, "num_keys", [])))
        assert proto.decode(_open(key, _recv(first))) == (3, proto.OK, 0)


# --- a man in the middle of an authenticated connection ----------------------------------


def _open(key: bytes, sealed: bytes) -> bytes:
    frame = proto.unseal(key, proto.TO_CLIENT, sealed)
    assert frame is not None, "the server's reply is not sealed with the session key"
    return frame


def _authenticate(dealer: zmq.Socket) -> bytes:
    """Run the handshake by hand on a raw DEALER; returns the session key."""
    nonce = bytes(random.getrandbits(8) for _ in range(proto.NONCE_BYTES))
    dealer.send(proto.encode(1, "hello", [nonce, proto.PROTOCOL_VERSION]))
    server_nonce = proto.decode(_recv(dealer))[2][0]
    dealer.send(proto.encode(2, "auth", [proto.client_proof(TOKEN, server_nonce, nonce)]))
    key = proto.session_key(TOKEN, nonce, server_nonce)
    assert proto.decode(_open(key, _recv(dealer)))[:2] == (2, proto.OK)
    return key


def _sealed(key: bytes, request_id: int, op: str, args: list) -> bytes:
    return proto.seal(key, proto.TO_SERVER, proto.encode(request_id, op, args))


def test_plain_request_injected_into_a_session_is_refused(server, store):
    """What an on-path attacker could write into an authenticated TCP stream."""
    before = server.stats()
    with _dealer(server.port) as dealer:
        key = _authenticate(dealer)
        dealer.send(proto.encode(3, "set", ["injected", b"x"]))
        assert proto.decode(_open(key, _recv(dealer))) == (3, proto.REFUSED,
                                                          "authenticate first")
        dealer.send(_sealed(key, 4, "num_keys", []))          # the session still works
        assert proto.decode(_open(key, _recv(dealer)))[:2] == (4, proto.OK)
    assert server.stats()["refused"] == before["refused"] + 1
    assert not store.check(["injected"])


def test_forged_altered_and_spliced_frames_are_dropped_and_counted(server, store):
    before = server.stats()
    with _dealer(server.port) as first, _dealer(server.port) as second:
        key, other = _authenticate(first), _authenticate(second)
        forged = _sealed(b"k" * 32, 3, "set", ["forged", b"x"])            # no session key
        altered = bytearray(_sealed(key, 4, "set", ["altered", b"x"]))
        altered[-1] ^= 1                                                 # one bit flipped
        spliced = _sealed(other, 5, "set", ["spliced", b"x"])             # second's frame
        for frame in (forged, bytes(altered), spliced):
            first.send(frame)
        first.send(_sealed(key, 6, "num_keys", []))          # answered: nothing else was
        assert proto.decode(_open(key, _recv(first)))[0] == 6
    assert server.stats()["forged_frames"] == before["forged_frames"] + 3
    assert not store.check(["forged"]) and not store.check(["altered"])
    assert not store.check(["spliced"])


def test_replayed_request_is_dropped_and_counted(server, store):
    before = server.stats()
    with _dealer(server.port) as dealer:
        key = _authenticate(dealer)
        add = _sealed(key, 3, "add", ["replayed", 1])
        dealer.send(add)
        assert proto.decode(_open(key, _recv(dealer))) == (3, proto.OK, 1)
        dealer.send(add)                                      # captured and sent again
        dealer.send(_sealed(key, 2, "add", ["replayed", 1]))  # an older id
        dealer.send(_sealed(key, 4, "num_keys", []))
        assert proto.decode(_open(key, _recv(dealer)))[0] == 4
    assert server.stats()["replayed_frames"] == before["replayed_frames"] + 2
    assert store.add("replayed", 0) == 1


def test_sealing_rejects_tampering_and_the_wrong_direction():
    key = b"s" * 32
    sealed = proto.seal(key, proto.TO_CLIENT, b"frame")
    assert proto.unseal(key, proto.TO_CLIENT, sealed) == b"frame"
    assert proto.unseal(key, proto.TO_SERVER, sealed) is None         # reflected back
    assert proto.unseal(b"t" * 32, proto.TO_CLIENT, sealed) is None
    assert proto.unseal(key, proto.TO_CLIENT, sealed[:-1] + b"g") is None
    assert proto.unseal(key, proto.TO_CLIENT, sealed[:10]) is None


# --- hostile bytes on a plain TCP connection --------------------------------------------


RAW_BEFORE_HANDSHAKE = {
    "random bytes": bytes(random.Random(1).getrandbits(8) for _ in range(4096)),
    "random bytes after 0xff": b"\xff" + bytes(random.Random(2).getrandbits(8) for _ in range(512)),
    "greeting then a 2**62-byte frame header": GREETING + _huge_frame_header(),
    "truncated greeting": GREETING[:30],
    "greeting then a truncated READY command": GREETING + _ready_command()[:10],
    "HTTP request": b"GET / HTTP/1.1\r\nHost: store\r\n\r\n",
}


@pytest.mark.parametrize("data", RAW_BEFORE_HANDSHAKE.values(), ids=RAW_BEFORE_HANDSHAKE.keys())
def test_garbage_before_the_zmtp_handshake_is_counted(server, data):
    before = server.stats()
    with socket.create_connection((HOST, server.port), timeout=5) as raw:
        raw.sendall(data)
        _server_hangs_up(raw, wait=0.3)   # a truncated greeting leaves it waiting: we hang up
    stats = wait_for_growth(server, before, "handshake_failures")
    assert stats["requests"] == before["requests"]
    assert stats["dropped_frames"] == before["dropped_frames"]   # nothing reached the server
    assert_still_serves(server)


def _zmtp_connection(port: int) -> socket.socket:
    """A plain TCP connection that has completed a NULL-mechanism ZMTP 3 handshake."""
    raw = socket.create_connection((HOST, port), timeout=5)
    raw.sendall(GREETING + _ready_command())
    _read_exactly(raw, 64)                     # the server's greeting
    flags, size = _read_exactly(raw, 2)        # its READY command (short frame)
    assert flags == 0x04
    _read_exactly(raw, size)
    return raw


def test_frame_claiming_2_62_bytes_after_the_handshake_is_cut(server):
    before = server.stats()
    with _zmtp_connection(server.port) as raw:
        raw.sendall(_huge_frame_header() + b"x" * 100)
        assert _server_hangs_up(raw, wait=5)   # at the header, without buffering the frame
    wait_for_growth(server, before, "incomplete_connections")
    assert_still_serves(server)


def test_truncated_frame_after_the_handshake_is_counted(server):
    before = server.stats()
    with _zmtp_connection(server.port) as raw:
        raw.sendall(b"\x00\x64" + b"x" * 10)    # claims 100 bytes, sends 10, then closes
    stats = wait_for_growth(server, before, "incomplete_connections")
    assert stats["requests"] == before["requests"]
    assert stats["dropped_frames"] == before["dropped_frames"]
    assert_still_serves(server)


# --- hostile frames from a real ZeroMQ peer ---------------------------------------------


class _dealer:
    """A raw zmq DEALER connected to the store (no handshake), closed on exit."""

    def __init__(self, port: int):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.connect(f"tcp://{HOST}:{port}")

    def __enter__(self) -> zmq.Socket:
        return self.socket

    def __exit__(self, *exc_info) -> None:
        self.socket.close(linger=0)
        self.context.term()


def _recv(dealer: zmq.Socket, timeout: float = 5.0) -> bytes:
    assert dealer.poll(Deadline(timeout).remaining_ms()), "no reply from the store server"
    return dealer.recv()


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"   # [[[...[nil]...]]]


BAD_FRAMES = {
    "not msgpack": b"\xc1 this is not msgpack",
    "empty frame": b"",
    "truncated msgpack": proto.encode(1, "set", ["k", b"v" * 100])[:-50],
    "trailing bytes": proto.encode(1, "num_keys", []) + b"\x00",
    "map instead of list": msgpack.packb({"id": 1, "op": "set"}),
    "list of two": msgpack.packb([1, "num_keys"]),
    "negative id": msgpack.packb([-1, "num_keys", []]),
    "string id": msgpack.packb(["1", "num_keys", []]),
    "bytes op": msgpack.packb([1, b"num_keys", []], use_bin_type=True),
    "unknown op": msgpack.packb([1, "shutdown", []]),
    "args not a list": msgpack.packb([1, "get", "k"]),
    "wrong arg types": msgpack.packb([1, "set", [1, "v"]]),
    "wrong arg count": msgpack.packb([1, "get", ["k"]]),
    "nan timeout": msgpack.packb([1, "get", ["k", float("nan")]]),
    "short nonce": msgpack.packb([1, "hello", [b"abc", 1]], use_bin_type=True),
    "ext type": msgpack.packb([1, "set", ["k", msgpack.ExtType(5, b"x")]]),
    "deeply nested": _nested(60_000),   # under the 64 KiB cap, over msgpack's depth limit
    "huge array claim": b"\xdd\xff\xff\xff\xff",
    "invalid utf-8 op": b"\x93\x01\xa2\xff\xfe\x90",
}


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_malformed_frames_are_dropped_without_reply(server, frame):
    before = server.stats()
    with _dealer(server.port) as dealer:
        dealer.send(frame)
        dealer.send(proto.encode(99, "num_keys", []))   # answered in order: "refused"
        assert proto.decode(_recv(dealer)) == (99, proto.REFUSED, "authenticate first")
    stats = server.stats()
    assert stats["dropped_frames"] == before["dropped_frames"] + 1
    assert stats["requests"] == before["requests"]
    assert_still_serves(server)


def test_multipart_message_is_dropped(server):
    before = server.stats()
    with _dealer(server.port) as dealer:
        dealer.send_multipart([proto.encode(1, "num_keys", []), b"extra"])
        dealer.send(proto.encode(2, "num_keys", []))
        assert proto.decode(_recv(dealer))[0] == 2
    assert server.stats()["dropped_frames"] == before["dropped_frames"] + 1
    assert_still_serves(server)


def test_oversize_frame_is_cut_by_libzmq_and_counted(server):
    before = server.stats()
    assert server.max_frame_bytes == 1 << 16
    with _dealer(server.port) as dealer:
        dealer.send(b"\x00" * (server.max_frame_bytes + 1))
        stats = wait_for_growth(server, before, "incomplete_connections")
    assert stats["dropped_frames"] == before["dropped_frames"]   # never reached the server
    assert_still_serves(server)


def test_authenticated_client_gets_a_reason_for_a_bad_request(server, store):
    with store._pool.borrow(Deadline(5)) as connection:
        status, reason = connection.request("shutdown", [], Deadline(5))
    assert status == proto.ERROR and "shutdown" in reason
    assert server.stats()["dropped_frames"] == 1


def test_flood_of_garbage_does_not_stall_honest_clients(server, store):
    before = server.stats()
    with _dealer(server.port) as dealer:
        for index in range(2000):
            dealer.send(b"\xc1" + index.to_bytes(4, "big"))
        start = time.monotonic()
        assert_still_serves(server)
        assert time.monotonic() - start < 5
        eventually(lambda: server.stats()["dropped_frames"] == before["dropped_frames"] + 2000,
                   what="all 2000 garbage frames to be counted")


def test_a_store_error_is_raised_when_the_port_is_not_a_store():
    """A client pointed at something that is not ZeroMQ fails fast, naming the port."""
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def answer_like_http():
        connection, _ = listener.accept()
        with connection:
            connection.recv(1024)
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 64)

    thread = threading.Thread(target=answer_like_http, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match=rf"{HOST}:{port} .*not a ringrt store"):
            Store(HOST, port, TOKEN, timeout=10)
        assert time.monotonic() - start < 2   # at the failed handshake, not at the timeout
    finally:
        thread.join(timeout=5)
        listener.close()


def test_client_accepts_only_replies_sealed_with_its_session_key():
    """A server that knows the token plays along, then answers a get three ways: an injected
    plain reply and one sealed with another key are ignored; the genuine one is taken."""
    impostor = _Impostor(lambda store: store.get("k"), timeout=8)
    with impostor as router:
        identity, hello = router.recv_multipart()
        hello_id, _, (client_nonce, _) = proto.decode(hello)
        server_nonce = b"s" * proto.NONCE_BYTES
        proof = proto.server_proof(TOKEN, client_nonce, server_nonce)
        router.send_multipart([identity, proto.encode(hello_id, proto.OK,
                                                      [server_nonce, proof, 1 << 16])])
        identity, auth = router.recv_multipart()
        key = proto.session_key(TOKEN, client_nonce, server_nonce)
        router.send_multipart([identity, proto.seal(key, proto.TO_CLIENT, proto.encode(
            proto.decode(auth)[0], proto.OK, None))])
        identity, sealed_get = router.recv_multipart()
        get_id, op, args = proto.decode(proto.unseal(key, proto.TO_SERVER, sealed_get))
        assert (op, args[0]) == ("get", "k")
        for reply in (proto.encode(get_id, proto.OK, b"injected"),
                      proto.seal(b"x" * 32, proto.TO_CLIENT,
                                 proto.encode(get_id, proto.OK, b"forged")),
                      proto.seal(key, proto.TO_CLIENT, proto.encode(get_id, proto.OK, b"real"))):
            router.send_multipart([identity, reply])
    assert impostor.outcome == [b"real"]
