"""A TCP relay that records what one side sends: a wire tap for the security tests."""

import socket
import threading


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
