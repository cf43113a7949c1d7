"""Fuzz the rendezvous store's frames: what a client, an attacker or a man in the middle can
send the server, sealed and unsealed, truncated, with lying length prefixes, replayed ids.

The server must drop or refuse every bad frame (counted), never hit its catch-all
(``internal_errors`` stays 0: that counter means a bug was hit), and keep serving its other
clients; the frame decoder raises nothing but ``MalformedFrame`` (a ``ProtocolError``).
"""

from __future__ import annotations

import os

import msgpack
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from ringrt.errors import ProtocolError
from ringrt.store import Store
from ringrt.store import _protocol as proto
from ringrt.store._server import StoreServer
from tests.fuzz._tried import tried
from tests.store._util import HOST, TOKEN

leaves = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
          | st.text(max_size=12) | st.binary(max_size=24))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=4) | st.integers(-9, 9), inner,
                                      max_size=3),
                      max_leaves=10)
ops = st.sampled_from([*proto.ARG_SHAPES, "", "set ", "__class__", "_op_set"]) | st.text(max_size=8)
# arguments that often fit an op's shape, so the ops themselves run on odd values
args = st.lists(st.text(max_size=8) | st.binary(max_size=8) | st.integers(-2**63, 2**63 - 1)
                | st.floats(0, 2) | st.lists(st.text(max_size=4), max_size=3)
                | st.sampled_from([b"-9223372036854775808", b"12", "k", b"k"])
                | st.builds(lambda n: b"1" * n, st.integers(4000, 5000)),
                max_size=3) | values
requests = st.builds(lambda i, op, a: msgpack.packb([i, op, a], use_bin_type=True),
                     st.integers(0, 2**63 - 1) | st.integers(-5, 2**64 - 1), ops, args)
length_bombs = st.builds(lambda lead, n, tail: lead + n.to_bytes(4, "big") + tail,
                         st.sampled_from([b"\x93\x01\xa3set\x92\xa1k\xc6", b"\xdb", b"\xdd",
                                          b"\xdf", b"\xc6", b"\x93\xdd"]),
                         st.integers(0, 2**32 - 1), st.binary(max_size=16))
frames = requests | length_bombs | st.binary(max_size=64)


@given(frames)
def test_decode_returns_a_request_or_raises_malformed_frame(frame):
    tried("store frame (decode)")
    try:
        request_id, op, _body = proto.decode(frame)
    except ProtocolError:
        return
    assert type(request_id) is int and request_id >= 0 and type(op) is str


@given(st.binary(max_size=80), st.binary(min_size=32, max_size=32))
def test_unseal_accepts_only_frames_sealed_with_the_key(sealed, key):
    tried("store frame (unseal)")
    inner = proto.unseal(key, proto.TO_SERVER, sealed)
    assert inner is None or proto.seal(key, proto.TO_SERVER, inner) == sealed


# --- the server's frame handler, in process (no sockets: thousands of frames a second) --------


def _session(server: StoreServer, identity: bytes) -> bytes:
    """Authenticate ``identity`` with the server's gatekeeper; returns its session key."""
    nonce = os.urandom(proto.NONCE_BYTES)
    server_nonce, _proof = server._gate.hello(identity, nonce)
    assert server._gate.verify(identity, proto.client_proof(TOKEN, server_nonce, nonce)) is None
    return proto.session_key(TOKEN, nonce, server_nonce)


def _replies(server: StoreServer) -> list:
    """The replies queued since the last call (sealed by the loop only when sent)."""
    outbox, server._table.outbox = server._table.outbox, []
    return outbox


@pytest.fixture(scope="module")
def handler():
    server = StoreServer(HOST, 0, TOKEN)          # never started: _on_frame is pure logic
    keys = {b"\0attacker": _session(server, b"\0attacker"),
            b"\0honest": _session(server, b"\0honest")}
    return server, keys, iter(range(1, 2**62))


@given(frames, st.sampled_from(["plain", "sealed", "sealed-truncated", "sealed-replayed",
                                "sealed-wrong-key", "stranger"]), st.integers(0, 40))
def test_no_frame_breaks_the_server_for_its_other_clients(handler, frame, how, cut):
    tried("store frame (server)")
    server, keys, honest_ids = handler
    identity = b"\0stranger" if how == "stranger" else b"\0attacker"
    key = keys[b"\0attacker"] if how != "sealed-wrong-key" else os.urandom(32)
    if how == "plain" or how == "stranger":
        wire = frame
    else:
        wire = proto.seal(key, proto.TO_SERVER, frame)
        if how == "sealed-truncated":
            wire = wire[:max(0, len(wire) - 1 - cut)]
    for _ in range(2 if how == "sealed-replayed" else 1):
        server._on_frame(identity, wire)
    _replies(server)
    assert server._counts["internal_errors"] == 0
    # the honest client still gets its answers
    honest, request_id = keys[b"\0honest"], next(honest_ids)
    server._on_frame(b"\0honest", proto.seal(honest, proto.TO_SERVER, proto.encode(
        request_id, "add", ["fuzz/counter", 1])))
    [(to, reply)] = _replies(server)
    got_id, status, total = proto.decode(reply)
    assert (to, got_id, status, total) == (b"\0honest", request_id, proto.OK, request_id)


def test_add_to_a_value_with_thousands_of_digits_is_refused_not_an_internal_error(handler):
    """int() refuses > 4300 digits with a ValueError, which reached the catch-all."""
    server, _keys, _ids = handler
    key = _session(server, b"\0digits")
    for request_id, request in ((1, ["set", ["fuzz/huge", b"1" * 5000]]),
                                (2, ["add", ["fuzz/huge", 1]])):
        server._on_frame(b"\0digits", proto.seal(key, proto.TO_SERVER,
                                                  proto.encode(request_id, *request)))
    *_, (_to, reply) = _replies(server)
    _id, status, reason = proto.decode(reply)
    assert status == proto.ERROR and "not an integer" in reason
    assert server._counts["internal_errors"] == 0


# --- a live server: the same frames over real sockets --------------------------------------


@pytest.fixture(scope="module")
def live():
    with StoreServer(HOST, 0, TOKEN, max_frame_bytes=1 << 16) as server:
        store = Store(HOST, server.port, TOKEN, timeout=10.0, rank=1)
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(f"tcp://{HOST}:{server.port}")
        try:
            yield server, store, dealer
        finally:
            dealer.close()
            context.term()
            store.close()


def _drain(dealer) -> None:
    while dealer.poll(0):
        dealer.recv()


@given(frames | st.builds(lambda n: b"\x93\x01\xa3set\x92\xa1k\xc6" + n.to_bytes(4, "big")
                          + b"x" * n, st.integers(60_000, 70_000)))
def test_a_live_server_keeps_serving_through_hostile_frames(live, frame):
    tried("store frame (live server)")
    server, store, dealer = live
    dealer.send(frame)
    store.set("fuzz/live", frame[:16])
    assert store.get("fuzz/live", timeout=10.0) == frame[:16]
    _drain(dealer)
    assert server.stats()["internal_errors"] == 0


def test_the_live_server_answered_every_honest_request(live):
    server, store, _dealer = live
    assert store.add("fuzz/live-count", 1) >= 1
    assert server.stats()["internal_errors"] == 0
