"""A TCP relay that records what one side sends: a wire tap for the security tests."""

import contextlib
import shutil
import socket
import threading
from dataclasses import dataclass

import zmq


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


@dataclass
class TappedPair:
    """Two ranks' transports in one process, the sender reaching the receiver's tcp inbox
    through a :class:`Relay`; each has its own context and Guard, as a rank does."""

    receiver: object
    sender: object
    relay: Relay
    guard: object                 # the receiver's
    mechanism: str                # the receiver's tcp mechanism


@contextlib.contextmanager
def tapped_pair(server, client, client_mechanism: str | None = None):
    """Yield a :class:`TappedPair` for LinkSecurity ``server`` (receiver) and ``client``
    (sender; ``client_mechanism`` overrides the one the receiver's card asks for)."""
    from ringrt._comm.auth import Guard
    from ringrt._comm.transport import Endpoints, Transport
    from tests.world import short_tmpdir

    contexts = [zmq.Context(), zmq.Context()]
    dirs = [short_tmpdir(), short_tmpdir()]
    guards = [Guard(contexts[0], 0, server), Guard(contexts[1], 1, client)]
    receiver = Transport(contexts[0], 0, Endpoints("127.0.0.1", dirs[0], server, guards[0]))
    card = receiver.open_network()
    host, port = card["tcp"].rsplit("/", 1)[1].rsplit(":", 1)
    relay = Relay((host, int(port)))
    sender = Transport(contexts[1], 1, Endpoints("127.0.0.1", dirs[1], client, guards[1]))
    try:
        sender.connect({0: {"host": "elsewhere", "ipc": None,
                            "tcp": f"tcp://127.0.0.1:{relay.port}",
                            "tcp_auth": client_mechanism or card["tcp_auth"]}})
        yield TappedPair(receiver, sender, relay, guards[0], card["tcp_auth"])
    finally:
        sender.close(0)
        receiver.close(0)
        relay.close()
        for guard in guards:
            guard.stop()
        for context in contexts:
            context.term()
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
