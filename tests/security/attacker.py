"""A tokenless attacker, run as its own process against a running job.

It does what someone on the machine or the network without the job token would do: list the
ports the workers listen on (their /proc entries, as ``ss -ltnp`` would; across lab hosts a
port scan finds the same), then, on every port:

- forged: a plain ZeroMQ PUSH (and, for heartbeat sockets, a DEALER) sending ringrt headers
  for the next all_reduce sequence numbers with wrong values, and "rank failed" heartbeats;
- wrong credentials: ZeroMQ PLAIN with a made-up password; CurveZMQ with a made-up key;
- replayed: raw bytes captured on the wire of another job, and of an earlier attempt of this
  job (same token, another nonce) - see ``captures.py``;
- garbage: random bytes, a truncated greeting, a greeting then a 2**62-byte frame header, an
  HTTP request.

The store port gets the same plus unauthenticated requests (set a key, read one). ipc
sockets are attacked as another user (``--as-nobody``, when started as root): connecting
must fail with a permission error. The report (JSON) lists every attempt, so the test can
compare it with what the ranks counted.

    python -m tests.security.attacker --signal-dir D --ranks N --store HOST:PORT
        [--captures DIR] [--as-nobody] [--timeout S]
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

from ringrt._comm import wire

LISTEN = "0A"
ACCEPTING = 1 << 16                # __SO_ACCEPTCON in /proc/net/unix
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)
GARBAGE = {
    "random": bytes(random.Random(7).getrandbits(8) for _ in range(4096)),
    "truncated-greeting": GREETING[:30],
    "huge-frame": GREETING + b"\x02" + struct.pack(">Q", 2**62),
    "http": b"GET / HTTP/1.1\r\nHost: ringrt\r\n\r\n",
}
SETTLE_S = 0.4                     # how long an attacking socket stays open to try its luck


# -- finding the ports ----------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def tcp_listeners(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every tcp socket ``pid`` listens on, from its network namespace."""
    inodes, found = _socket_inodes(pid), []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == LISTEN and int(fields[9]) in inodes:
            address, port = fields[1].split(":")
            found.append((socket.inet_ntoa(struct.pack("<I", int(address, 16))), int(port, 16)))
    return found


def ipc_listeners(pid: int) -> list[str]:
    """Paths of the unix sockets ``pid`` listens on."""
    inodes, found = _socket_inodes(pid), []
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and int(fields[3], 16) & ACCEPTING and int(fields[6]) in inodes:
            found.append(fields[7])
    return found


# -- attacks --------------------------------------------------------------------------------


def _forged_data(ranks: int) -> list[bytes]:
    """ringrt DATA messages for the next all_reduce ops, from every rank, with wrong values."""
    messages = []
    dtype = wire.DTYPE_CODES[np.dtype(np.float64)]
    for seq in range(64):
        for src in range(ranks):
            for count in (1, 1000):
                payload = np.full(count, 666.0).tobytes()
                header = wire.pack(wire.DATA, wire.OP_CODES["all_reduce"], dtype, 1, wire.INLINE,
                                   0, src, seq, count, -1, 0)
                messages.append(header + payload)
    return messages


def _zmq_attempt(context, address: str, kind: int, messages: list, configure=None) -> None:
    sock = context.socket(kind)
    sock.linger = 0
    sock.sndhwm = 0
    sock.reconnect_ivl = -1                   # one connection per attempt: counted once
    if configure:
        configure(sock)
    sock.connect(address)
    for message in messages:
        try:
            sock.send(message, zmq.NOBLOCK)
        except zmq.Again:
            break
    time.sleep(SETTLE_S)                      # give the handshake time to fail
    sock.close()


def _raw_attempt(host: str, port: int, data: bytes) -> None:
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            raw.sendall(data)
            raw.settimeout(SETTLE_S)
            try:
                while raw.recv(4096):
                    pass
            except (socket.timeout, OSError):
                pass
    except OSError:
        pass


def attack_port(host: str, port: int, ranks: int, captures: dict[str, bytes]) -> list[str]:
    """Every attack on one tcp port; returns the attempts made (one connection each)."""
    address = f"tcp://{host}:{port}"
    context = zmq.Context()
    forged = _forged_data(ranks)
    heartbeats = [msgpack.packb(["failed", r, "forged by the attacker"]) for r in range(ranks)]
    public, secret = zmq.curve_keypair()
    fake_server, _ = zmq.curve_keypair()

    def plain(sock):
        sock.plain_username, sock.plain_password = b"ringrt", b"guessed-password"

    def curve(sock):
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = \
            fake_server, public, secret

    attempts = []
    try:
        for name, kind, messages, configure in (
                ("forged-data", zmq.PUSH, forged, None),
                ("forged-heartbeat", zmq.DEALER, heartbeats, None),
                ("plain-guess", zmq.PUSH, forged, plain),
                ("curve-guess", zmq.PUSH, forged, curve)):
            _zmq_attempt(context, address, kind, messages, configure)
            attempts.append(name)
    finally:
        context.term()
    for name, data in {**GARBAGE, **captures}.items():
        _raw_attempt(host, port, data)
        attempts.append(name)
    return attempts


def attack_store(host: str, port: int) -> dict:
    """Unauthenticated requests to the store; returns what came back."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(f"tcp://{host}:{port}")
    replies = []
    try:
        dealer.send(msgpack.packb([1, "set", ["poisoned", b"by the attacker"]]))
        dealer.send(msgpack.packb([2, "get", ["ringrt/attempt0/init0/nonce", 0]]))
        dealer.send(b"\xc1" + bytes(16) + msgpack.packb([3, "set", ["poisoned", b"x"]]))
        while dealer.poll(1000):
            replies.append(msgpack.unpackb(dealer.recv()))
    finally:
        dealer.close()
        context.term()
    attempts = ["store-requests"]
    for name, data in GARBAGE.items():
        _raw_attempt(host, port, data)
        attempts.append(name)
    return {"attempts": attempts, "replies": [[r[0], r[1]] for r in replies]}


def attack_ipc_as_nobody(paths: list[str]) -> dict[str, str]:
    """Connect to each unix socket as user nobody, in a child; path -> outcome."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the child: drop root, try, report, exit
        os.close(reader)
        outcome = {}
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            for path in paths:
                with socket.socket(socket.AF_UNIX) as unix:
                    try:
                        unix.connect(path)
                        outcome[path] = "connected"
                    except PermissionError:
                        outcome[path] = "permission denied"
                    except OSError as exc:
                        outcome[path] = f"refused: {exc}"
        finally:
            os.write(writer, json.dumps(outcome).encode())
            os._exit(0)
    os.close(writer)
    data = b""
    while chunk := os.read(reader, 65536):
        data += chunk
    os.close(reader)
    os.waitpid(pid, 0)
    return json.loads(data or b"{}")


# -- the run --------------------------------------------------------------------------------


def _wait_for(path: Path, deadline: float) -> None:
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"attacker: {path} never appeared")
        time.sleep(0.02)


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--signal-dir", required=True)
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--store", required=True, help="HOST:PORT")
    parser.add_argument("--captures", default=None)
    parser.add_argument("--as-nobody", action="store_true")
    parser.add_argument("--timeout", type=float, default=60)
    opts = parser.parse_args(argv)
    assert "RINGRT_TOKEN" not in os.environ, "the attacker must not hold the token"
    signals = Path(opts.signal_dir)
    deadline = time.monotonic() + opts.timeout
    _wait_for(signals / "ready", deadline)
    pids = {r: int((signals / f"pid{r}").read_text()) for r in range(opts.ranks)}
    ports = {r: tcp_listeners(pid) for r, pid in pids.items()}
    ipc = {r: ipc_listeners(pid) for r, pid in pids.items()}
    captures = {}
    if opts.captures:
        captures = {p.stem: p.read_bytes() for p in sorted(Path(opts.captures).glob("*.bin"))}
    report = {"ports": {str(r): p for r, p in ports.items()}, "attempts": {}}
    threads = []

    def attack(rank, host, port):
        report["attempts"][f"{rank}@{host}:{port}"] = attack_port(host, port, opts.ranks,
                                                                  captures)

    for rank, listeners in ports.items():
        for host, port in listeners:
            threads.append(threading.Thread(target=attack, args=(rank, host, port)))
    store_host, store_port = opts.store.rsplit(":", 1)
    for thread in threads:
        thread.start()
    report["store"] = attack_store(store_host, int(store_port))
    for thread in threads:
        thread.join()
    if opts.as_nobody:
        report["ipc"] = attack_ipc_as_nobody([p for paths in ipc.values() for p in paths])
    (signals / "report.json").write_text(json.dumps(report))
    (signals / "attacked").touch()


if __name__ == "__main__":
    main(sys.argv[1:])
