"""The store client's connections: one authenticated DEALER each, lent out by a pool.

:class:`ringrt.store.Store` borrows a :class:`_Connection` from its :class:`_Pool` for each
request, so threads never share a socket. The wire format and handshake are described in
``_protocol``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

from ringrt import _curve
from ringrt._deadline import Deadline
from ringrt.errors import AuthenticationError, StoreError
from ringrt.store import _protocol as proto

_MAX_REPLY_BYTES = 256 << 20  # libzmq drops a connection sending a larger frame to a client
_POLL_CAP_MS = 1000
_LOST = zmq.EVENT_DISCONNECTED


class _NoReply(Exception):
    """The deadline passed before the server answered."""


class _ConnectionLost(Exception):
    """The TCP connection carrying a request closed before its reply came."""


@dataclass(frozen=True)
class _Peer:
    """Where the store server is, and who is asking: the facts every error message needs."""

    host: str
    port: int
    rank: int | None

    @property
    def who(self) -> str:
        return "" if self.rank is None else f" on rank {self.rank}"

    def unreachable_hint(self) -> str:
        return (
            f"No reply from a store server at {self.host}:{self.port}: check that rank 0 (or "
            "ringrun) is running and reachable from this host, and that MASTER_ADDR / "
            "MASTER_PORT point at it."
        )

    def auth_error(self) -> AuthenticationError:
        return AuthenticationError(
            f"store authentication failed{self.who} with the store server at "
            f"{self.host}:{self.port}: this process's RINGRT_TOKEN differs from the job's. "
            "Use the token ringrun printed / exported as RINGRT_TOKEN for every rank (or pass "
            "the same token= to every Store)."
        )

    def not_a_store(self) -> StoreError:
        return StoreError(
            f"{self.host}:{self.port} refused the ZeroMQ handshake{self.who}: either it is not "
            "a ringrt store server (check MASTER_PORT), or only one side encrypts "
            "(RINGRT_ENCRYPT / ringrun --encrypt), or, encrypted, the RINGRT_TOKENs differ."
        )


# --- one connection ---------------------------------------------------------------------


class _Connection:
    """One authenticated DEALER connection. Used by one thread at a time (the pool's job).

    A socket monitor reports the TCP connection closing, so a request whose connection died
    fails at once instead of at its deadline; libzmq then reconnects, and the next request
    authenticates again.
    """

    def __init__(self, peer: _Peer, token: str, curve: _curve.CurveKeys | None = None):
        self._peer, self._token = peer, token
        self._ids = itertools.count(1)
        self._session = False          # authenticated on the current TCP connection
        self._key: bytes | None = None  # that session's sealing key (see _protocol)
        self.max_frame_bytes = proto.DEFAULT_MAX_FRAME_BYTES
        self._context = zmq.Context(io_threads=1)
        self._socket = self._context.socket(zmq.DEALER)
        proto.configure(self._socket, peer.host, _MAX_REPLY_BYTES)
        self._monitor = self._socket.get_monitor_socket(_LOST | proto.HANDSHAKE_FAILED_EVENTS)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        _curve.connect_as_client(self._socket, curve)
        try:
            self._socket.connect(proto.tcp_endpoint(peer.host, peer.port))
        except zmq.ZMQError as exc:
            self.close()
            raise StoreError(f"cannot connect{peer.who} to the store at {peer.host}:{peer.port}: "
                             f"{exc.strerror}; check MASTER_ADDR / MASTER_PORT") from exc

    @classmethod
    def open(cls, peer: _Peer, token: str, curve: _curve.CurveKeys | None,
             deadline: Deadline) -> _Connection:
        """Connects and authenticates within ``deadline``."""
        connection = cls(peer, token, curve)
        try:
            connection.authenticate(deadline)
        except BaseException:
            connection.close()
            raise
        return connection

    def request(self, op: str, args: list, deadline: Deadline) -> tuple[str, object]:
        """Sends one request and returns its reply's ``(status, payload)``.

        Raises:
            ValueError: the request is larger than the server accepts.
            _NoReply, _ConnectionLost: see their docstrings.
        """
        if self._drain_events():
            self._session = False
        if not self._session:
            self.authenticate(deadline)
        status, payload = self._exchange(op, args, deadline)
        if status == proto.REFUSED:   # the server saw a new connection (we reconnected)
            self._session = False
            self.authenticate(deadline)
            status, payload = self._exchange(op, args, deadline)
        return status, payload

    def authenticate(self, deadline: Deadline) -> None:
        """Runs the mutual token handshake (see ``_protocol``).

        Raises:
            AuthenticationError: the server's token differs from ours.
        """
        self._key = None
        nonce = os.urandom(proto.NONCE_BYTES)
        server_nonce, server_proof, max_frame = self._hello(nonce, deadline)
        expected = proto.server_proof(self._token, nonce, server_nonce)
        genuine = proto.proofs_match(expected, server_proof)
        proof = proto.client_proof(self._token, server_nonce, nonce) if genuine else b""
        self._key = proto.session_key(self._token, nonce, server_nonce)   # seals from here on
        status, reason = self._exchange("auth", [proof], deadline, sealed=False)
        if not genuine or status == proto.AUTH_FAILED:
            raise self._peer.auth_error()
        if status != proto.OK:
            raise StoreError(f"store handshake{self._peer.who} refused by {self._peer.host}:"
                             f"{self._peer.port}: {reason}")
        self._session, self.max_frame_bytes = True, max_frame

    def close(self) -> None:
        """Closes the socket and its context at once.

        Every request has had its reply or was given up on, so nothing queued is worth a
        LINGER wait (a hello queued for an unreachable server would otherwise hold close()).
        """
        self._socket.disable_monitor()
        self._monitor.close(linger=0)
        self._socket.close(linger=0)
        self._context.term()

    def _hello(self, nonce: bytes, deadline: Deadline) -> tuple[bytes, bytes, int]:
        while True:
            try:
                status, payload = self._exchange("hello", [nonce, proto.PROTOCOL_VERSION],
                                                 deadline, sealed=False)
                break
            except _ConnectionLost:   # the hello went down with the connection; zmq reconnects
                continue
        shape_ok = (isinstance(payload, list) and len(payload) == 3
                    and proto.is_nonce(payload[0]) and proto.is_bytes(payload[1])
                    and proto.is_int64(payload[2]) and payload[2] > 0)
        if status != proto.OK or not shape_ok:
            raise StoreError(f"store handshake{self._peer.who} with {self._peer.host}:"
                             f"{self._peer.port} failed: {payload!r}")
        return payload[0], payload[1], payload[2]

    def _exchange(self, op: str, args: list, deadline: Deadline, sealed: bool = True
                  ) -> tuple[str, object]:
        request_id = next(self._ids)
        frame = proto.encode(request_id, op, args)
        if sealed:
            frame = proto.seal(self._key, proto.TO_SERVER, frame)
        if len(frame) > self.max_frame_bytes:
            raise ValueError(
                f"store.{op}: request of {len(frame)} bytes exceeds the store's frame limit of "
                f"{self.max_frame_bytes} bytes; the store is for small rendezvous data, send "
                "arrays through collectives")
        self._send(frame, deadline)
        return self._await(request_id, deadline)

    def _send(self, frame: bytes, deadline: Deadline) -> None:
        # A DEALER queues while connecting; it only refuses when its queue (SNDHWM) is full.
        while True:
            try:
                return self._socket.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                if not self._socket.poll(deadline.remaining_ms(_POLL_CAP_MS), zmq.POLLOUT) \
                        and deadline.expired():
                    raise _NoReply from None

    def _await(self, request_id: int, deadline: Deadline) -> tuple[str, object]:
        while True:
            ready = dict(self._poller.poll(deadline.remaining_ms(_POLL_CAP_MS)))
            if self._monitor in ready and self._drain_events():
                self._session = False
                raise _ConnectionLost
            if self._socket in ready:
                reply = self._receive()
                if reply is not None and reply[0] == request_id:
                    return reply[1], reply[2]
                continue   # a late reply to a request we gave up on, or not genuine
            if deadline.expired():
                raise _NoReply

    def _receive(self) -> tuple[int, str, object] | None:
        """The next reply; None for one that is not genuine (a sealed reply whose tag does
        not verify, or a plain one other than a refusal or a handshake answer)."""
        frame = self._socket.recv(zmq.NOBLOCK)
        sealed = proto.is_sealed(frame)
        if sealed:
            frame = proto.unseal(self._key, proto.TO_CLIENT, frame) if self._key else None
            if frame is None:
                return None
        try:
            reply = proto.decode(frame)
        except proto.MalformedFrame as exc:
            raise StoreError(f"bad reply{self._peer.who} from the store at {self._peer.host}:"
                             f"{self._peer.port}: {exc}") from None
        if not sealed and self._session and reply[1] != proto.REFUSED:
            return None      # in a session only a refusal may come unsealed
        return reply

    def _drain_events(self) -> bool:
        """Reads pending monitor events; True when the connection closed since the last look."""
        lost = False
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event & proto.HANDSHAKE_FAILED_EVENTS:
                raise self._peer.not_a_store()
            lost = lost or event == _LOST
        return lost


class _Pool:
    """Idle connections; each request borrows one, so threads never share a socket."""

    def __init__(self, connect: Callable[[Deadline], _Connection]):
        self._connect = connect
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def borrow(self, deadline: Deadline) -> Iterator[_Connection]:
        """Yields an idle connection, or a new one authenticated within ``deadline``."""
        with self._lock:
            if self._closed:
                raise StoreError("this Store has been closed")
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = self._connect(deadline)
        try:
            yield connection
        finally:
            self._give_back(connection)

    def close(self) -> None:
        """Closes idle connections now, and busy ones when their request returns."""
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for connection in idle:
            connection.close()

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed:
                return self._idle.append(connection)
        connection.close()
