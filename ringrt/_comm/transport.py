"""This rank's data-plane sockets: inboxes every peer pushes to, one outbox per peer.

A rank listens only where a peer needs it (less to attack): on ``ipc://`` (a socket file in a
directory only this user may enter) for peers on this host, and - only once the rendezvous
shows a peer on another host, or with ``RINGRT_TRANSPORT=tcp`` - on ``tcp://`` (the
interface that routes to ``MASTER_ADDR``) for the others. Each is its own ``PULL`` socket,
because the mechanism is per socket: the ipc inbox needs none (the kernel checks who may
connect), the tcp inbox admits only peers that prove the job token (``auth.py``). A peer
connects its ``PUSH`` outbox to our ipc inbox when both run on the same host and to the tcp
one otherwise; ZeroMQ keeps per-connection FIFO order, which the algorithms rely on:
messages from one sender to one receiver arrive in the order they were sent.

High-water marks are off: an op never sends more than its own payload, so memory is bounded
by the op, and a blocked ``send`` could otherwise deadlock two ranks sending to each other.
zmq errors are translated here; nothing above this module sees a ``zmq.ZMQError``.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
import tempfile
import threading

import zmq

from ringrt._comm.auth import Guard, LinkSecurity
from ringrt._comm.stale import remove_stale, sweep_jobs
from ringrt._settings import Settings, read_setting
from ringrt.errors import DistError


def host_identity(settings: Settings | None = None) -> str:
    """Which machine this is (``RINGRT_HOST_ID``, else the hostname); ranks with the same
    identity talk over ipc://."""
    host_id = read_setting("RINGRT_HOST_ID") if settings is None else settings.host_id
    return host_id or socket.gethostname()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity); peers read it from the card to
    cost two-level collectives (a host with more ranks than cores slows every step)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # no affinity API (macOS)
        return os.cpu_count() or 1


def route_address(master_addr: str, settings: Settings | None = None) -> str:
    """The local IPv4 address of the interface that routes to ``master_addr``.

    Uses a UDP ``connect`` (which sends nothing) and reads the chosen source address back.
    ``RINGRT_BIND_ADDR`` overrides it.
    """
    override = read_setting("RINGRT_BIND_ADDR") if settings is None else settings.bind_addr
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


IPC_PREFIX = "rr-"
# An AF_UNIX path holds at most 107 bytes on Linux and 103 on macOS (sun_path, NUL included).
# A socket's path is the parent, "/rr-PID-XXXXXXXX" (mkdtemp) and "/RANK.d": the parent gets
# what is left after a 7-digit pid and a 6-digit rank.
IPC_PATH_MAX = {"darwin": 103}.get(sys.platform, 107)
_IPC_PATH_OVERHEAD = len("/rr-1234567-xxxxxxxx/123456.d")


def make_ipc_dir(path_max: int = IPC_PATH_MAX, settings: Settings | None = None) -> str:
    """A private, short directory for this rank's socket files (AF_UNIX paths are short:
    ``IPC_PATH_MAX``).

    ``rr-PID-XXXX``, mode 0700 and owned by this user (checked: a directory made by someone
    else would let them in); directories left by our own ranks that died without cleaning up
    are removed first.

    Raises:
        DistError: ``RINGRT_IPC_DIR`` is too long for socket paths on this platform, or the
            directory made is not private.
    """
    parent = (read_setting("RINGRT_IPC_DIR") if settings is None else settings.ipc_dir) \
        or "/tmp"
    if len(parent) + _IPC_PATH_OVERHEAD > path_max:
        raise DistError(f"RINGRT_IPC_DIR={parent} is {len(parent)} bytes long: socket paths "
                        f"under it would exceed this platform's AF_UNIX limit of {path_max} "
                        f"bytes; set RINGRT_IPC_DIR to a directory of at most "
                        f"{path_max - _IPC_PATH_OVERHEAD} bytes (e.g. /tmp), or unset it")
    os.makedirs(parent, exist_ok=True)
    remove_stale(parent, IPC_PREFIX)
    sweep_jobs()                      # and what SIGKILLed ringruns left in /tmp
    path = tempfile.mkdtemp(prefix=f"{IPC_PREFIX}{os.getpid()}-", dir=parent)
    info = os.lstat(path)
    if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) != 0o700:
        raise DistError(f"the ipc directory {path} is not private (owner {info.st_uid}, mode "
                        f"{stat.S_IMODE(info.st_mode):o}); set RINGRT_IPC_DIR to a directory "
                        "of your own")
    return path


class Endpoints:
    """Binds this rank's listening sockets and picks the right peer address to connect to."""

    def __init__(self, bind_addr: str, ipc_dir: str, security: LinkSecurity, guard: Guard,
                 settings: Settings | None = None):
        settings = Settings.read() if settings is None else settings
        self.bind_addr = bind_addr
        self.ipc_dir = ipc_dir
        self.security = security
        self.guard = guard
        self.mode = settings.transport          # auto | tcp | ipc (RINGRT_TRANSPORT)
        self.host = host_identity(settings)

    def bind_local(self, sock: zmq.Socket, name: str) -> dict:
        """Bind ``sock`` on ipc (unless RINGRT_TRANSPORT=tcp); returns the local card part
        ``{"host", "cores", "ipc"}``."""
        card = {"host": self.host, "cores": usable_cores(), "ipc": None}
        if self.mode != "tcp":
            path = os.path.join(self.ipc_dir, name)
            sock.bind(f"ipc://{path}")
            card["ipc"] = f"ipc://{path}"
        return card

    def bind_network(self, sock: zmq.Socket) -> dict:
        """Secure ``sock`` and bind it on tcp; returns ``{"tcp", "tcp_auth"}``."""
        if self.mode == "ipc":
            raise DistError("RINGRT_TRANSPORT=ipc, but some peers run on other hosts; unset it")
        mechanism = self.security.mechanism(self.bind_addr)
        self.security.serve(sock, mechanism)
        self.guard.watch(sock)
        try:
            sock.bind(f"tcp://{self.bind_addr}:0")
        except zmq.ZMQError as exc:
            raise DistError(
                f"cannot listen on {self.bind_addr} ({exc}); set RINGRT_BIND_ADDR to an "
                "address of this host that the other ranks can reach"
            ) from exc
        return {"tcp": sock.getsockopt_string(zmq.LAST_ENDPOINT), "tcp_auth": mechanism}

    def connect(self, sock: zmq.Socket, card: dict) -> str:
        """Connect ``sock`` to the peer described by ``card``; returns the address used."""
        address = self.choose(card)
        if address.startswith("tcp://"):
            self.security.connect_as_client(sock, card["tcp_auth"])
        sock.connect(address)
        return address

    def choose(self, card: dict) -> str:
        """The address to use for a peer's card: ipc on the same host, tcp otherwise."""
        same_host = card.get("host") == self.host
        if card.get("ipc") and same_host and self.mode != "tcp":
            return card["ipc"]
        if not card.get("tcp"):
            raise DistError(f"peer on host {card.get('host')!r} offers no tcp address")
        return card["tcp"]


class Transport:
    """The inboxes and outboxes of one rank. Sends are thread-safe; receives are not (one
    thread at a time runs ops, see ``work.Executor``)."""

    def __init__(self, context: zmq.Context, rank: int, endpoints: Endpoints):
        self.rank = rank
        self._context = context
        self._endpoints = endpoints
        self.inbox = self._new_inbox()
        self.card = endpoints.bind_local(self.inbox, f"{rank}.d")
        self._inboxes = [self.inbox]
        self._poller: zmq.Poller | None = None
        self._outboxes: dict[int, zmq.Socket] = {}
        self.routes: dict[int, str] = {}          # peer -> "ipc" | "tcp" (what connect chose)
        self._send_lock = threading.Lock()

    def _new_inbox(self) -> zmq.Socket:
        inbox = self._context.socket(zmq.PULL)
        inbox.setsockopt(zmq.RCVHWM, 0)
        inbox.setsockopt(zmq.LINGER, 0)
        return inbox

    def open_network(self) -> dict:
        """Listen on tcp too (a peer runs on another host); returns the card's tcp part."""
        if self.card.get("ipc") is None:
            network = self.inbox                       # tcp only: the one inbox
        else:
            network = self._new_inbox()
            self._inboxes.append(network)
            self._poller = zmq.Poller()
            for inbox in self._inboxes:
                self._poller.register(inbox, zmq.POLLIN)
        tcp = self._endpoints.bind_network(network)
        self.card = {**self.card, **tcp}
        return tcp

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
        try:
            if self._poller is None:
                return self._recv_one(self.inbox, timeout_ms)
            message = self._recv_any()                  # ipc and tcp: whichever has one
            if message is not None or timeout_ms == 0 or not self._poller.poll(timeout_ms):
                return message
            return self._recv_any()
        except zmq.ZMQError as exc:
            raise DistError(f"rank {self.rank}: receive failed: {exc}") from exc

    def _recv_any(self):
        for inbox in self._inboxes:
            message = self._recv_one(inbox, 0)
            if message is not None:
                return message
        return None

    @staticmethod
    def _recv_one(inbox: zmq.Socket, timeout_ms: int | None):
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

    def close(self, linger_ms: int) -> None:
        """Close every socket, giving queued messages ``linger_ms`` to leave."""
        for out in self._outboxes.values():
            out.setsockopt(zmq.LINGER, linger_ms)
            out.close()
        self._outboxes.clear()
        for inbox in self._inboxes:
            inbox.close(0)


def remove_ipc_dir(path: str) -> None:
    """Delete this rank's socket directory (called once every socket is closed)."""
    shutil.rmtree(path, ignore_errors=True)
