"""Bytes captured on the wire of other jobs, for the attacker to replay.

A relay between two ringrt transports records what the connecting side sends: the ZeroMQ
handshake with its credentials, then ringrt messages (forged all_reduce data). Made for
another job (another token) and for an earlier attempt of the attacked job (its token, but
another rendezvous nonce), with PLAIN and with CurveZMQ. Replayed byte for byte against the
job, every one must be refused: PLAIN's password binds the nonce, CurveZMQ's handshake binds
fresh keys of both sides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ringrt._comm import wire
from ringrt._comm.auth import LinkSecurity
from tests.relay import tapped_pair


def _capture(security: LinkSecurity) -> bytes:
    dtype = wire.DTYPE_CODES[np.dtype(np.float64)]
    with tapped_pair(security, security) as pair:
        for seq in range(16):
            header = wire.pack(wire.DATA, wire.OP_CODES["all_reduce"], dtype, 1, wire.INLINE, 0,
                               1, seq, 1, -1, 0)
            pair.sender.send(0, header + np.full(1, 666.0).tobytes())
        for _ in range(16):
            assert pair.receiver.recv(3000) is not None, "the capture job did not deliver"
        return bytes(pair.relay.captured)


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
