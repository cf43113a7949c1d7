"""Who may connect to this rank's sockets, and the thread that checks them.

Every socket a rank listens on admits only peers that prove they hold the job token, before
any of their bytes reach a mailbox. The mechanism follows the link:

- **ipc** (peers on this host): the socket files live in a directory only this user may
  enter (0700, see ``transport.make_ipc_dir``), so the kernel refuses everyone else at
  ``connect``. No handshake, no per-message cost.
- **tcp, loopback** (one host with ``RINGRT_TRANSPORT=tcp``): ZeroMQ PLAIN with a password
  derived from the token and this rendezvous's random nonce, checked by our ZAP handler.
  Only root can sniff loopback, so the password cannot be captured, and the nonce makes
  one from another job or an earlier restart useless. No per-message cost.
- **tcp to other hosts**: CurveZMQ with key pairs derived from the token (``ringrt._curve``):
  the handshake proves the token on both sides, and every message is encrypted and
  authenticated, so nobody on the network can inject, alter, replay or read. Its cost is
  measured in the README ("Security").

``encrypt=True`` (``RINGRT_ENCRYPT=1``, ``ringrun --encrypt``) takes CurveZMQ on loopback too;
``encrypt=False`` (``RINGRT_ENCRYPT=0``) takes PLAIN across hosts too: still token-checked,
but the password crosses the network in the clear, so use it only on a network you trust.
``RINGRT_INSECURE_TCP=1`` turns authentication off (ZeroMQ NULL) for benchmarks against the
unauthenticated baseline.

:class:`Guard` is a daemon thread that answers ZAP requests (RFC 27) for this rank's context
and reads the socket monitors of its tcp sockets, counting the connections it accepted,
authenticated and refused (``ringrt.stats()["transport"]``); each refusing address is logged
once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import threading
from dataclasses import dataclass

import zmq
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from ringrt import _curve
from ringrt._comm.wakepipe import WakePipe

ZAP_ENDPOINT = "inproc://zeromq.zap.01"       # fixed by RFC 27: one handler per context
ZAP_DOMAIN = b"ringrt-data"
PLAIN_USER = b"ringrt"
CURVE, PLAIN, NULL = "curve", "plain", "null"
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_MONITORED = zmq.EVENT_ACCEPTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | _FAILED

_log = logging.getLogger("ringrt")


@dataclass(frozen=True)
class LinkSecurity:
    """How this job's tcp links are secured (the same on every rank).

    Public as ``ringrt.LinkSecurity``, for building a :class:`ringrt.ProcessGroup` whose links
    differ from the job's default, e.g. ``ProcessGroup(store, rank, world_size,
    security=LinkSecurity(token, encrypt=True))``.

    Attributes:
        token: the job token every rank holds.
        encrypt: True: CurveZMQ on every tcp link; None (default): CurveZMQ to other hosts,
            PLAIN on loopback; False: PLAIN everywhere.
        insecure: no authentication at all (RINGRT_INSECURE_TCP=1; benchmarks only).
        nonce: this rendezvous's random nonce (from the store), bound into PLAIN passwords.
    """

    token: str
    encrypt: bool | None = None
    insecure: bool = False
    nonce: bytes = b""

    def mechanism(self, bind_address: str) -> str:
        """The mechanism of a socket listening on ``bind_address`` (tcp)."""
        if self.insecure:
            return NULL
        if self.encrypt is not None:
            return CURVE if self.encrypt else PLAIN
        return PLAIN if _is_loopback(bind_address) else CURVE

    def password(self) -> bytes:
        """The PLAIN password of this rendezvous: HMAC(token, nonce), never the token."""
        digest = hmac.new(self.token.encode(), b"ringrt-data-v1/" + self.nonce, hashlib.sha256)
        return digest.hexdigest().encode()

    def keys(self) -> _curve.CurveKeys:
        return _curve.derive_keys(self.token)

    def serve(self, sock: zmq.Socket, mechanism: str) -> None:
        """Configure a listening socket (before ``bind``) for ``mechanism``."""
        if mechanism == NULL:
            return
        sock.zap_domain = ZAP_DOMAIN          # our Guard answers for it
        if mechanism == CURVE:
            _curve.serve(sock, self.keys())
        else:
            sock.plain_server = True

    def connect_as_client(self, sock: zmq.Socket, mechanism: str) -> None:
        """Configure a connecting socket (before ``connect``) for the peer's ``mechanism``."""
        if mechanism == CURVE:
            _curve.connect_as_client(sock, self.keys())
        elif mechanism == PLAIN:
            sock.plain_username = PLAIN_USER
            sock.plain_password = self.password()

    def admits(self, mechanism: bytes, credentials: list[bytes]) -> bool:
        """The ZAP decision: do these handshake credentials prove the token?"""
        if mechanism == b"PLAIN" and len(credentials) == 2:
            user, password = credentials
            return user == PLAIN_USER and hmac.compare_digest(password, self.password())
        if mechanism == b"CURVE" and len(credentials) == 1:
            return hmac.compare_digest(credentials[0], z85.decode(self.keys().client_public))
        return False


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class Guard:
    """The ZAP handler of one rank's context, and the counters of its tcp sockets."""

    def __init__(self, context: zmq.Context, rank: int, security: LinkSecurity):
        self.rank = rank
        self.security = security
        self.counts = dict.fromkeys(("accepted", "authenticated", "zap_denied",
                                     "handshake_failed"), 0)
        self._logged: set[str] = set()
        self._zap = context.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind(ZAP_ENDPOINT)
        self._monitors: list[zmq.Socket] = []
        self._pending: list[zmq.Socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = WakePipe()               # watch() and stop() end a poll at once
        self._thread = threading.Thread(target=self._run, name=f"ringrt-guard-{rank}",
                                        daemon=True)
        self._thread.start()

    def watch(self, sock: zmq.Socket) -> None:
        """Count the connections to ``sock`` (a listening tcp socket)."""
        monitor = sock.get_monitor_socket(_MONITORED)
        with self._lock:
            self._pending.append(monitor)
        self._wake.ring()

    def refused(self) -> int:
        """Connections that never authenticated (refused, or still in their handshake)."""
        return self.counts["accepted"] - self.counts["authenticated"]

    def stop(self) -> None:
        """Stop the thread and close its sockets (bounded)."""
        self._stop.set()
        self._wake.ring()
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._wake.close()
        for monitor in self._monitors + self._pending:
            monitor.close(0)
        self._zap.close(0)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        poller.register(self._wake.fd, zmq.POLLIN)
        while not self._stop.is_set():
            with self._lock:
                for monitor in self._pending:
                    poller.register(monitor, zmq.POLLIN)
                    self._monitors.append(monitor)
                self._pending.clear()
            try:
                ready = dict(poller.poll())     # until a request, an event or a ring
            except zmq.ZMQError:
                return                          # context terminated under us: shutting down
            if self._wake.fd in ready:
                self._wake.drain()
            if self._zap in ready:
                self._answer_zap()
            for monitor in self._monitors:
                if monitor in ready:
                    self._count_events(monitor)

    def _answer_zap(self) -> None:
        try:
            request = self._zap.recv_multipart(zmq.NOBLOCK)
        except zmq.ZMQError:
            return
        version, request_id, _domain, address, _identity, mechanism, *credentials = \
            request + [b""] * max(0, 6 - len(request))
        if self.security.admits(mechanism, credentials):
            reply = [version, request_id, b"200", b"OK", b"", b""]
        else:
            self.counts["zap_denied"] += 1
            self._log_refusal(address.decode(errors="replace"),
                              mechanism.decode(errors="replace"))
            reply = [version, request_id, b"400", b"no proof of the job token", b"", b""]
        try:
            self._zap.send_multipart(reply)
        except zmq.ZMQError:
            pass

    def _count_events(self, monitor: zmq.Socket) -> None:
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))["event"]
            except zmq.ZMQError:
                return
            if event == zmq.EVENT_ACCEPTED:
                self.counts["accepted"] += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.counts["authenticated"] += 1
            elif event & _FAILED:
                self.counts["handshake_failed"] += 1

    def _log_refusal(self, address: str, mechanism: str) -> None:
        if address not in self._logged and len(self._logged) < 100:
            self._logged.add(address)
            _log.warning("rank %d refused a %s connection from %s: it did not prove the job "
                         "token (counted in ringrt.stats())", self.rank, mechanism, address)
