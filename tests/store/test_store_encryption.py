"""The store over CurveZMQ (jobs run with encryption), tier 2: one process, real sockets."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import zmq

from ringrt._curve import derive_keys
from ringrt.errors import StoreError
from ringrt.store import Store
from ringrt.store._server import StoreServer
from tests.store._util import HOST, TOKEN, wait_for_growth

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE"),
]

KEYS = derive_keys(TOKEN)
MARKER = b"PLAINTEXT-STORE-VALUE-" * 8


@pytest.fixture
def curve_server():
    with StoreServer(HOST, 0, TOKEN, curve=KEYS) as running:
        yield running


class _Relay:
    """Forwards TCP connections to ``port`` and keeps a copy of every byte, both ways."""

    def __init__(self, port: int):
        self.target, self.captured = (HOST, port), bytearray()
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                self.captured.extend(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self):
        self.listener.close()


def _sniff(server: StoreServer, curve) -> bytes:
    relay = _Relay(server.port)
    try:
        with Store(HOST, relay.port, TOKEN, timeout=5, curve=curve) as client:
            client.set("secret", MARKER)
            assert client.get("secret") == MARKER
    finally:
        relay.close()
    return bytes(relay.captured)


def test_encrypted_store_round_trip_through_a_hosting_master():
    with Store(HOST, 0, TOKEN, is_master=True, timeout=5, curve=KEYS) as master:
        with Store(HOST, master.port, TOKEN, timeout=5, curve=KEYS) as client:
            client.set("k", b"v")
            assert master.get("k") == b"v"
            assert client.add("n", 2) == 2


def test_values_travel_encrypted(curve_server):
    wire = _sniff(curve_server, KEYS)
    assert len(wire) > len(MARKER) and MARKER[:16] not in wire


def test_values_travel_in_the_clear_without_encryption(server):
    assert MARKER[:16] in _sniff(server, None)   # the sniffer itself works


@pytest.mark.parametrize("client_keys", [None, derive_keys("another-job")],
                         ids=["plaintext client", "other token's keys"])
def test_mismatched_encryption_fails_fast_and_says_why(curve_server, client_keys):
    before = curve_server.stats()
    start = time.monotonic()
    with pytest.raises(StoreError, match="refused the ZeroMQ handshake.*encrypt"):
        Store(HOST, curve_server.port, TOKEN, timeout=10, curve=client_keys)
    assert time.monotonic() - start < 3
    wait_for_growth(curve_server, before, "handshake_failures")
    with Store(HOST, curve_server.port, TOKEN, timeout=5, curve=KEYS) as client:
        client.set("still", b"serving")


def test_encrypted_client_of_a_plaintext_server_fails_fast(server):
    with pytest.raises(StoreError, match="refused the ZeroMQ handshake"):
        Store(HOST, server.port, TOKEN, timeout=10, curve=KEYS)


def test_garbage_is_still_counted_by_an_encrypted_server(curve_server):
    before = curve_server.stats()
    with socket.create_connection((HOST, curve_server.port), timeout=5) as raw:
        raw.sendall(b"\xff" + bytes(range(256)) * 4)
        raw.settimeout(2)
        try:
            while raw.recv(4096):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    wait_for_growth(curve_server, before, "handshake_failures")
