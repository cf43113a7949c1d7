"""This rank's data-plane sockets: one inbox every peer pushes to, one outbox per peer.

Each rank binds one ``PULL`` socket (the inbox) on ``ipc://`` (a socket file under a short
``/tmp`` directory) and on ``tcp://`` (the interface that routes to ``MASTER_ADDR``), and
publishes both addresses through the store. A peer connects its ``PUSH`` socket to the ipc
address when both run on the same host and to the tcp address otherwise. ZeroMQ keeps
per-connection FIFO order, which the algorithms rely on: messages from one sender to one
receiver arrive in the order they were sent.

High-water marks are off: an op never sends more than its own payload, so memory is bounded
by the op, and a blocked ``send`` could otherwise deadlock two ranks sending to each other.
zmq errors are translated here; nothing above this module sees a ``zmq.ZMQError``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading

import zmq

from ringrt import _curve
from ringrt.errors import DistError


def host_identity() -> str:
    """Which machine this is; ranks with the same identity talk over ipc://."""
    return os.environ.get("RINGRT_HOST_ID") or socket.gethostname()


def route_address(master_addr: str) -> str:
    """The local IPv4 address of the interface that routes to ``master_addr``.

    Uses a UDP ``connect`` (which sends nothing) and reads the chosen source address back.
    ``RINGRT_BIND_ADDR`` overrides it.
    """
    override = os.environ.get("RINGRT_BIND_ADDR")
    if override:
        return override
    try:
        target = socket.gethostbyname(master_addr)
    except OSError as exc:
        raise DistError(
            f"MASTER_ADDR {master_addr!r} does not resolve ({exc}); set it to rank 0's host "
            "name or IP address"
        ) from exc
    if target.startswith("127."):
        return "127.0.0.1"
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((target, 9))
        return probe.getsockname()[0]
    except OSError:
        return "0.0.0.0"
    finally:
        probe.close()


def make_ipc_dir() -> str:
    """A private, short directory for this rank's socket files (AF_UNIX paths cap at 107 B)."""
    parent = os.environ.get("RINGRT_IPC_DIR") or "/tmp"
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix="rr-", dir=parent)


class Endpoints:
    """Binds a socket on ipc and/or tcp and picks the right peer address to connect to."""

    def __init__(self, bind_addr: str, ipc_dir: str, curve=None):
        self.bind_addr = bind_addr
        self.ipc_dir = ipc_dir
        self.curve = curve                  # CurveKeys when the job is encrypted
        self.mode = os.environ.get("RINGRT_TRANSPORT", "auto").lower()
        if self.mode not in ("auto", "tcp", "ipc"):
            raise ValueError(f"RINGRT_TRANSPORT={self.mode!r}: use auto, tcp or ipc")

    def bind(self, sock: zmq.Socket, name: str) -> dict:
        """Bind ``sock`` and return its address card ``{"host", "ipc", "tcp"}``."""
        card = {"host": host_identity(), "ipc": None, "tcp": None}
        _curve.serve(sock, self.curve)
        if self.mode in ("auto", "ipc"):
            path = os.path.join(self.ipc_dir, name)
            sock.bind(f"ipc://{path}")
            card["ipc"] = f"ipc://{path}"
        if self.mode in ("auto", "tcp"):
            try:
                sock.bind(f"tcp://{self.bind_addr}:0")
            except zmq.ZMQError as exc:
                raise DistError(
                    f"cannot listen on {self.bind_addr} ({exc}); set RINGRT_BIND_ADDR to an "
                    "address of this host that the other ranks can reach"
                ) from exc
            card["tcp"] = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return card

    def connect(self, sock: zmq.Socket, card: dict) -> str:
        """Connect ``sock`` to the peer described by ``card``; returns the address used."""
        address = self.choose(card)
        _curve.connect_as_client(sock, self.curve)
        sock.connect(address)
        return address

    def choose(self, card: dict) -> str:
        """The address to use for a peer's card: ipc on the same host, tcp otherwise."""
        same_host = card.get("host") == host_identity()
        if card.get("ipc") and (same_host or not card.get("tcp")) and self.mode != "tcp":
            return card["ipc"]
        if not card.get("tcp"):
            raise DistError(f"peer on host {card.get('host')!r} offers no tcp address")
        return card["tcp"]


class Transport:
    """The inbox and outboxes of one rank. Sends are thread-safe; receives are not (one
    thread at a time runs ops, see ``_work.Executor``)."""

    def __init__(self, context: zmq.Context, rank: int, endpoints: Endpoints):
        self.rank = rank
        self._context = context
        self._endpoints = endpoints
        self.inbox = context.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.RCVHWM, 0)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.card = endpoints.bind(self.inbox, f"{rank}.d")
        self._outboxes: dict[int, zmq.Socket] = {}
        self.routes: dict[int, str] = {}          # peer -> "ipc" | "tcp" (what connect chose)
        self._send_lock = threading.Lock()

    def connect(self, cards: dict[int, dict]) -> None:
        """Open an outbox to every peer in ``cards`` (rank -> address card)."""
        for peer, card in cards.items():
            if peer == self.rank or peer in self._outboxes:
                continue
            out = self._context.socket(zmq.PUSH)
            out.setsockopt(zmq.SNDHWM, 0)
            out.setsockopt(zmq.LINGER, -1)
            address = self._endpoints.connect(out, card)
            self._outboxes[peer] = out
            self.routes[peer] = address.split(":", 1)[0]

    def send(self, dst: int, first, payload=None, track: bool = False):
        """Send one message: ``first`` (header, maybe with inline payload) [+ ``payload``].

        ``payload`` is sent zero-copy; with ``track=True`` the returned MessageTracker tells
        when zmq no longer reads the buffer (the caller must not modify it before then).
        """
        out = self._outboxes[dst]
        try:
            with self._send_lock:
                if payload is None:
                    out.send(first, copy=True)
                    return None
                out.send(first, zmq.SNDMORE, copy=True)
                return out.send(payload, copy=False, track=track)
        except zmq.ZMQError as exc:
            raise DistError(f"rank {self.rank} could not send to rank {dst}: {exc}") from exc

    def recv(self, timeout_ms: int | None):
        """Receive one message as ``(first_frame, payload_frame_or_None)``; None on timeout."""
        inbox = self.inbox
        try:
            if timeout_ms == 0 and not inbox.poll(0):      # a quick look: no exception built
                return None
            try:
                first = inbox.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                if not inbox.poll(timeout_ms):
                    return None
                first = inbox.recv(zmq.NOBLOCK, copy=False)
            payload = inbox.recv(copy=False) if first.more else None
            while inbox.getsockopt(zmq.RCVMORE):      # never leave a stray part behind
                inbox.recv(copy=False)
            return first, payload
        except zmq.ZMQError as exc:
            raise DistError(f"rank {self.rank}: receive failed: {exc}") from exc

    def close(self, linger_ms: int) -> None:
        """Close every socket, giving queued messages ``linger_ms`` to leave."""
        for out in self._outboxes.values():
            out.setsockopt(zmq.LINGER, linger_ms)
            out.close()
        self._outboxes.clear()
        self.inbox.close(0)


def remove_ipc_dir(path: str) -> None:
    """Delete this rank's socket directory (called once every socket is closed)."""
    shutil.rmtree(path, ignore_errors=True)

