"""Bytes captured on the wire of other jobs, for the attacker to replay (issue 10).

A relay between two ringrt transports records what the connecting side sends: the ZeroMQ
handshake with its credentials, then ringrt messages (forged all_reduce data). Made for
another job (another token) and for an earlier attempt of the attacked job (its token, but
another rendezvous nonce), with PLAIN and with CurveZMQ. Replayed byte for byte against the
job, every one must be refused: PLAIN's password binds the nonce, CurveZMQ's handshake binds
fresh keys of both sides.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import zmq

from ringrt._comm import wire
from ringrt._comm.auth import Guard, LinkSecurity
from ringrt._comm.transport import Endpoints, Transport
from tests.relay import Relay
from tests.world import short_tmpdir


def _capture(security: LinkSecurity) -> bytes:
    contexts = [zmq.Context(), zmq.Context()]
    dirs = [short_tmpdir(), short_tmpdir()]
    guards = [Guard(contexts[0], 0, security), Guard(contexts[1], 1, security)]
    receiver = Transport(contexts[0], 0, Endpoints("127.0.0.1", dirs[0], security, guards[0]))
    card = receiver.open_network()
    host, port = card["tcp"].rsplit("/", 1)[1].rsplit(":", 1)
    relay = Relay((host, int(port)))
    sender = Transport(contexts[1], 1, Endpoints("127.0.0.1", dirs[1], security, guards[1]))
    sender.connect({0: {"host": "elsewhere", "ipc": None, "tcp": f"tcp://127.0.0.1:{relay.port}",
                        "tcp_auth": card["tcp_auth"]}})
    dtype = wire.DTYPE_CODES[np.dtype(np.float64)]
    try:
        for seq in range(16):
            header = wire.pack(wire.DATA, wire.OP_CODES["all_reduce"], dtype, 1, wire.INLINE, 0,
                               1, seq, 1, -1, 0)
            sender.send(0, header + np.full(1, 666.0).tobytes())
        for _ in range(16):
            assert receiver.recv(3000) is not None, "the capture job did not deliver"
        return bytes(relay.captured)
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


def make_captures(job_token: str, out_dir: Path) -> list[str]:
    """Write one capture per (origin, mechanism) into ``out_dir``; returns their names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    origins = {"other-job": LinkSecurity(token="another-job-token", nonce=b"a" * 16),
               "earlier-attempt": LinkSecurity(token=job_token, nonce=b"e" * 16)}
    names = []
    for origin, security in origins.items():
        for mechanism, encrypt in (("plain", False), ("curve", True)):
            name = f"replay-{origin}-{mechanism}"
            data = _capture(LinkSecurity(security.token, encrypt=encrypt, nonce=security.nonce))
            (out_dir / f"{name}.bin").write_bytes(data)
            names.append(name)
    return names
