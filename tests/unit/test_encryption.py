"""Tier 2 (sockets in one process): CurveZMQ keys from the token encrypt what crosses the wire.

A TCP relay between two transports records every byte on the wire, so the test can see
whether a marker payload travels in the clear.
"""

import shutil
import socket
import threading

import pytest
import zmq

from ringrt._comm.transport import Endpoints, Transport
from ringrt._curve import derive_keys
from tests.world import short_tmpdir

MARKER = b"PLAINTEXT-MARKER-" * 64


class Relay:
    """Forward one TCP connection to ``target`` and keep a copy of the client's bytes."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.captured = target, bytearray()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
        self._pump(client, upstream, self.captured)

    @staticmethod
    def _pump(src, dst, record):
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass

    def close(self):
        self.listener.close()


def _send_through_relay(server_keys, client_keys):
    context = zmq.Context()
    dirs = [short_tmpdir(), short_tmpdir()]
    receiver = Transport(context, 0, Endpoints("127.0.0.1", dirs[0], server_keys))
    host, port = receiver.card["tcp"].rsplit("/", 1)[1].rsplit(":", 1)
    relay = Relay((host, int(port)))
    sender = Transport(context, 1, Endpoints("127.0.0.1", dirs[1], client_keys))
    sender.connect({0: {"host": "elsewhere", "ipc": None,
                        "tcp": f"tcp://127.0.0.1:{relay.port}"}})
    try:
        sender.send(0, MARKER)
        message = receiver.recv(3000)
        return (None if message is None else bytes(message[0].buffer)), bytes(relay.captured)
    finally:
        sender.close(0)
        receiver.close(0)
        relay.close()
        context.term()
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(30)
def test_plaintext_is_visible_on_the_wire_without_encryption():
    received, wire = _send_through_relay(None, None)
    assert received == MARKER
    assert MARKER[:32] in wire


@pytest.mark.timeout(30)
def test_encrypted_traffic_hides_the_payload():
    keys = derive_keys("job-token")
    received, wire = _send_through_relay(keys, keys)
    assert received == MARKER
    assert len(wire) > len(MARKER) and b"PLAINTEXT-MARKER" not in wire


@pytest.mark.timeout(30)
def test_a_client_without_the_token_cannot_deliver():
    received, _ = _send_through_relay(derive_keys("job-token"), derive_keys("another-token"))
    assert received is None


def test_keys_need_a_token():
    with pytest.raises(ValueError, match="RINGRT_TOKEN"):
        derive_keys("")
    assert derive_keys("a") == derive_keys("a") != derive_keys("b")
