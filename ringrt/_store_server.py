"""The rendezvous store server: one ROUTER socket served by a daemon thread.

Layers, bottom up: :class:`_Table` holds keys, values and parked get/wait requests (pure
logic, no sockets); :class:`_Gatekeeper` runs the token handshake and remembers authenticated
ZMQ identities; :class:`_ConnectionLedger` turns socket-monitor events into connection
counters; :class:`StoreServer` owns the sockets and the loop. The wire format is in
``_store_protocol``.

Nothing from the network can stop the loop: malformed frames are dropped and counted,
requests from peers that have not authenticated are refused and counted, and libzmq closes
connections whose frames exceed ``max_frame_bytes`` before buffering them.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import _curve
from . import _store_protocol as proto
from .errors import StoreError

__all__ = ["StoreServer"]

_log = logging.getLogger(__name__)

_POLL_MS = 100                 # loop wakes at least this often (close() also wakes it)
_BATCH = 256                   # frames handled per wake-up before looking at the monitor again
_MAX_WAITERS = 1 << 16         # parked get/wait requests; more are refused, not queued
_MAX_PENDING_HANDSHAKES = 1024  # hello without auth yet; the oldest is forgotten first
_MAX_TRUSTED = 1 << 16         # authenticated identities remembered; the oldest is forgotten first
_HANDSHAKE_IVL_MS = 10_000     # libzmq drops a connection that has not finished ZMTP by then
_INTEGER = re.compile(rb"-?[0-9]+")

_FAILED_EVENTS = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MONITORED = (
    zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | _FAILED_EVENTS
)

Reply = tuple[bytes, bytes]    # (ZMQ identity, encoded frame)


class _BadRequest(Exception):
    """A well-formed request the table cannot serve; the text goes back to the client."""


# --- keys, values and parked requests ---------------------------------------------------


@dataclass(eq=False)
class _Waiter:
    """A parked get (``value_key`` set) or wait (``value_key`` None)."""

    identity: bytes
    request_id: int
    value_key: str | None
    missing: set[str]
    expires_at: float
    ticket: int
    parked: bool = False
    done: bool = False


class _Table:
    """Keys, values and parked get/wait requests. Pure logic: replies go to ``outbox``."""

    def __init__(self, max_waiters: int = _MAX_WAITERS):
        self.values: dict[str, bytes] = {}
        self.outbox: list[Reply] = []
        self._max_waiters = max_waiters
        self._waiting: dict[str, dict[int, _Waiter]] = {}   # key -> ticket -> waiter
        self._expiry: list[tuple[float, int, _Waiter]] = []  # heap, with lazy deletion
        self._live = 0
        self._tickets = itertools.count()

    @property
    def waiters(self) -> int:
        """Parked requests not yet answered."""
        return self._live

    def put(self, key: str, value: bytes) -> None:
        """Stores ``value`` and answers every request parked on ``key``."""
        self.values[key] = value
        for waiter in self._waiting.pop(key, {}).values():
            waiter.missing.discard(key)
            if not waiter.missing:
                self._answer(waiter, proto.OK, self._result(waiter))

    def add(self, key: str, amount: int) -> int:
        """torch ``add``: a missing key counts from 0; values are decimal ASCII."""
        current = self.values.get(key, b"0")
        if not _INTEGER.fullmatch(current):
            raise _BadRequest(f"add({key!r}): the stored value {current[:40]!r} is not an integer")
        total = int(current) + amount
        if not proto.INT64_MIN <= total <= proto.INT64_MAX:
            raise _BadRequest(f"add({key!r}): {int(current)} + {amount} overflows int64")
        self.put(key, str(total).encode())
        return total

    def compare_set(self, key: str, expected: bytes, desired: bytes) -> bytes:
        """torch TCPStore ``compare_set``, including its missing-key cases."""
        if key not in self.values:
            if expected:
                return expected   # torch returns `expected` without storing anything
            self.put(key, desired)
            return desired
        if self.values[key] == expected:
            self.put(key, desired)
        return self.values[key]

    def park(self, identity: bytes, request_id: int, keys: list[str], value_key: str | None,
             timeout: float, now: float) -> None:
        """Answers at once when every key exists, else parks the request until set or expiry."""
        missing = {key for key in keys if key not in self.values}
        waiter = _Waiter(identity, request_id, value_key, missing, now + timeout,
                         next(self._tickets))
        if not missing:
            return self._answer(waiter, proto.OK, self._result(waiter))
        if timeout <= 0:
            return self._answer(waiter, proto.TIMEOUT, sorted(missing))
        if self._live >= self._max_waiters:
            raise _BadRequest(f"the server already holds {self._live} waiting requests")
        for key in missing:
            self._waiting.setdefault(key, {})[waiter.ticket] = waiter
        heapq.heappush(self._expiry, (waiter.expires_at, waiter.ticket, waiter))
        waiter.parked = True
        self._live += 1

    def expire(self, now: float) -> None:
        """Answers "timeout" to every parked request whose time is up."""
        while self._expiry and self._expiry[0][0] <= now:
            waiter = heapq.heappop(self._expiry)[2]
            if waiter.done:
                continue
            for key in waiter.missing:
                self._waiting.get(key, {}).pop(waiter.ticket, None)
                if not self._waiting.get(key, True):
                    del self._waiting[key]
            self._answer(waiter, proto.TIMEOUT, sorted(waiter.missing))

    def next_expiry(self) -> float | None:
        """Monotonic time of the earliest parked request's expiry (None when none)."""
        self._compact()
        return self._expiry[0][0] if self._expiry else None

    def _compact(self) -> None:
        # Answered waiters stay in the heap until their expiry; drop them once they dominate.
        if len(self._expiry) > 2 * self._live + 1024:
            self._expiry = [entry for entry in self._expiry if not entry[2].done]
            heapq.heapify(self._expiry)

    def _result(self, waiter: _Waiter) -> bytes | None:
        return None if waiter.value_key is None else self.values[waiter.value_key]

    def _answer(self, waiter: _Waiter, status: str, payload) -> None:
        if waiter.done:
            return
        waiter.done = True
        if waiter.parked:
            self._live -= 1
        self.outbox.append((waiter.identity, proto.encode(waiter.request_id, status, payload)))


# --- authentication ---------------------------------------------------------------------


class _Gatekeeper:
    """Runs the token handshake (see ``_store_protocol``) and remembers who passed it.

    Identities are the ones the ROUTER assigns; libzmq refuses peer-chosen identities that
    start with a zero byte, so a peer cannot claim another connection's assigned identity.
    """

    def __init__(self, token: str):
        self._token = token
        self._pending: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self._trusted: OrderedDict[bytes, None] = OrderedDict()
        self.clients = 0   # successful authentications so far

    def trusts(self, identity: bytes) -> bool:
        """True once ``identity`` has completed the handshake."""
        return identity in self._trusted

    def hello(self, identity: bytes, client_nonce: bytes) -> list:
        """Answers a hello: a fresh server nonce and the proof over the client's nonce."""
        server_nonce = os.urandom(proto.NONCE_BYTES)
        _remember(self._pending, identity, (client_nonce, server_nonce), _MAX_PENDING_HANDSHAKES)
        self._trusted.pop(identity, None)   # a new hello starts a new session
        return [server_nonce, proto.server_proof(self._token, client_nonce, server_nonce)]

    def verify(self, identity: bytes, proof: bytes) -> str | None:
        """Checks the client's proof over the server nonce sent to ``identity``.

        Returns:
            None when it holds the token, else the reason it is refused.
        """
        nonces = self._pending.pop(identity, None)
        if nonces is None:   # never said hello, or evicted by a flood of hellos
            return "no handshake in progress on this connection; send hello first"
        client_nonce, server_nonce = nonces
        expected = proto.client_proof(self._token, server_nonce, client_nonce)
        if not proto.proofs_match(expected, proof):
            return proto.AUTH_FAILED
        _remember(self._trusted, identity, None, _MAX_TRUSTED)
        self.clients += 1
        return None


def _remember(table: OrderedDict, key, value, cap: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > cap:
        table.popitem(last=False)


# --- connection accounting --------------------------------------------------------------


class _ConnectionLedger:
    """Counts connections that failed the ZMTP handshake or closed before a complete frame.

    libzmq reports some handshake failures (``EVENT_HANDSHAKE_FAILED_*``) but closes other
    connections without a word: a frame header claiming 2**62 bytes during the handshake, a
    ZMTP/1.0 or random greeting (refused because ZAP_DOMAIN is set), and, after the
    handshake, a frame over MAXMSGSIZE or one cut short. So each connection's fd is tracked
    from ACCEPTED to DISCONNECTED; a frame from it (its SRCFD) proves it completed the
    handshake. Handshake events carry an error code, not the fd, so they are matched to
    connections in accept order: exact when handshakes do not overlap, and a connection is
    never counted twice.
    """

    def __init__(self):
        self._state: dict[int, str] = {}   # fd -> "handshaking" | "ready" | "talked" | "failed"
        self._queue: deque[int] = deque()  # fds awaiting a handshake event, in accept order
        self._early = 0                    # handshakes proven by a frame before their event
        self.open = self.total = 0
        self.handshake_failures = 0        # closed before the ZMTP handshake completed
        self.incomplete = 0                # handshake done, closed before any complete frame

    def on_event(self, event: int, fd: int) -> None:
        """Updates the counters from one socket-monitor event (``fd`` is its value)."""
        if event == zmq.EVENT_ACCEPTED:
            self._accepted(fd)
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._settle("ready")
        elif event & _FAILED_EVENTS:
            self._settle("failed")
            self.handshake_failures += 1
        elif event == zmq.EVENT_DISCONNECTED:
            self._closed(fd)

    def on_frame(self, fd: int) -> None:
        """Notes that a complete frame arrived on ``fd``."""
        if self._state.get(fd, "handshaking") == "handshaking":
            self._early += 1
            with contextlib.suppress(ValueError):
                self._queue.remove(fd)
        self._state[fd] = "talked"

    def _accepted(self, fd: int) -> None:
        self.open += 1
        self.total += 1
        if self._state.get(fd) != "talked":   # not already heard from (frames read first)
            self._state[fd] = "handshaking"
            self._queue.append(fd)

    def _settle(self, outcome: str) -> None:
        if outcome == "ready" and self._early:
            self._early -= 1
            return
        while self._queue:
            fd = self._queue.popleft()
            if self._state.get(fd) == "handshaking":
                self._state[fd] = outcome
                return

    def _closed(self, fd: int) -> None:
        self.open = max(0, self.open - 1)
        state = self._state.pop(fd, None)
        if state == "handshaking":
            self.handshake_failures += 1
            with contextlib.suppress(ValueError):
                self._queue.remove(fd)
        elif state == "ready":
            self.incomplete += 1


# --- the server -------------------------------------------------------------------------


class StoreServer:
    """The c10d-TCPStore-like rendezvous server, run by a daemon thread.

    Example::

        server = StoreServer("127.0.0.1", 0, token).start()
        store = Store("127.0.0.1", server.port, token)
        ...
        server.close()

    Args:
        host: address to bind ("*" or "0.0.0.0" for every interface).
        port: TCP port; 0 picks a free one (read back into ``self.port`` after binding).
        token: the job token clients must prove they hold.
        max_frame_bytes: largest frame accepted; libzmq closes a connection that sends more.
        curve: CurveZMQ keys (``_curve.derive_keys(token)``) to encrypt every connection;
            clients must use the same keys. None: plaintext, the token handshake only.
    """

    def __init__(self, host: str, port: int, token: str = "", *,
                 max_frame_bytes: int = proto.DEFAULT_MAX_FRAME_BYTES,
                 curve: _curve.CurveKeys | None = None):
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"StoreServer: port must be an int in 0..65535, got {port!r}")
        if not isinstance(max_frame_bytes, int) or max_frame_bytes < 1024:
            raise ValueError(
                f"StoreServer: max_frame_bytes must be an int >= 1024, got {max_frame_bytes!r}")
        self.host, self.port, self.max_frame_bytes = host, port, max_frame_bytes
        self._curve = curve
        self._table = _Table()
        self._gate = _Gatekeeper(token)
        self._ledger = _ConnectionLedger()
        self._counts = dict.fromkeys(
            ("requests", "dropped_frames", "refused", "auth_failures", "dropped_replies",
             "internal_errors"), 0)
        self._stopping = threading.Event()
        self._close_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._context: zmq.Context | None = None
        self._router: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._wake_rx: zmq.Socket | None = None   # close() pokes the loop through this pair
        self._wake_tx: zmq.Socket | None = None

    def start(self) -> StoreServer:
        """Binds ``tcp://host:port`` and starts serving on a daemon thread.

        Returns:
            self, with ``port`` set to the bound port.

        Raises:
            StoreError: the address cannot be bound (port in use, unknown interface).
        """
        if self._context is not None:
            raise RuntimeError("StoreServer.start() called twice")
        self._context = zmq.Context(io_threads=1)
        self._router = self._bind()
        self._monitor = self._router.get_monitor_socket(_MONITORED)
        self._wake_rx, self._wake_tx = self._wake_pair()
        self._thread = threading.Thread(target=self._serve, name=f"ringrt-store:{self.port}",
                                        daemon=True)
        self._thread.start()
        return self

    def stats(self) -> dict:
        """Counters: requests served, frames dropped, refusals, failed handshakes, clients...

        ``handshake_failures`` counts connections that never completed the ZMTP handshake;
        ``incomplete_connections`` those closed after it but before sending a complete frame
        (a frame over ``max_frame_bytes``, which libzmq refuses unread, or a truncated one);
        ``dropped_frames`` counts frames that reached the server but were not a valid request;
        ``refused`` counts requests from peers that had not authenticated; ``clients`` counts
        successful authentications.
        """
        ledger = self._ledger
        return {
            **self._counts,
            "handshake_failures": ledger.handshake_failures,
            "connections_open": ledger.open,
            "connections_total": ledger.total,
            "incomplete_connections": ledger.incomplete,
            "clients": self._gate.clients,
            "keys": len(self._table.values),
            "waiters": self._table.waiters,
        }

    def close(self) -> None:
        """Stops the thread and closes the sockets; idempotent, returns within about a second."""
        with self._close_lock:
            self._stopping.set()
            if self._context is None:   # never started, or already closed
                return
            with contextlib.suppress(zmq.Again):   # Again: the loop saw the flag and is gone
                self._wake_tx.send(b"", zmq.NOBLOCK)
            self._thread.join(timeout=5.0)   # the loop closes its own sockets on the way out
            if self._thread.is_alive():
                raise StoreError(f"store server on {self.host}:{self.port} did not stop within 5 s")
            self._wake_tx.close(linger=0)
            self._context.term()   # bounded by the sockets' LINGER
            self._context = None

    def __enter__(self) -> StoreServer:
        return self.start() if self._context is None else self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- setup ---

    def _bind(self) -> zmq.Socket:
        router = self._context.socket(zmq.ROUTER)
        proto.configure(router, self.host, self.max_frame_bytes)
        router.setsockopt(zmq.HANDSHAKE_IVL, _HANDSHAKE_IVL_MS)
        # Any ZAP domain makes libzmq refuse ZMTP/1.0 peers, whose unversioned framing would
        # otherwise turn random bytes into messages. No ZAP handler runs in this private
        # context, so NULL-mechanism peers are still admitted.
        router.setsockopt(zmq.ZAP_DOMAIN, b"ringrt-store")
        _curve.serve(router, self._curve)
        try:
            router.bind(proto.tcp_endpoint(self.host, self.port))
        except zmq.ZMQError as exc:
            router.close(linger=0)
            self._context.term()
            self._context = None
            reason = zmq.strerror(exc.errno)
            raise StoreError(
                f"cannot start the store server on {self.host}:{self.port}: {reason}. "
                "If the port is in use (an earlier job still running?), pick another "
                "MASTER_PORT / --master-port, or pass port 0 to choose a free one."
            ) from exc
        endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.port = int(endpoint.rsplit(":", 1)[1])
        return router

    def _wake_pair(self) -> tuple[zmq.Socket, zmq.Socket]:
        address = f"inproc://ringrt-store-wake-{id(self):x}"
        receiver = self._context.socket(zmq.PAIR)
        receiver.bind(address)
        sender = self._context.socket(zmq.PAIR)
        sender.connect(address)
        return receiver, sender

    def _close_sockets(self) -> None:
        self._router.disable_monitor()
        self._monitor.close(linger=0)
        self._wake_rx.close(linger=0)
        self._router.close()   # keeps LINGER: flushes the last replies

    # --- the loop ---

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                ready = dict(poller.poll(self._poll_ms()))
                # Frames first: a connection's frames are read before its DISCONNECTED event
                # is counted, so the ledger knows it sent something.
                drained = self._drain_router() if self._router in ready else True
                if drained and self._monitor in ready:
                    self._drain_monitor()
                self._table.expire(time.monotonic())
                self._flush()
        finally:
            self._close_sockets()

    def _poll_ms(self) -> int:
        expiry = self._table.next_expiry()
        if expiry is None:
            return _POLL_MS
        return max(0, min(_POLL_MS, int((expiry - time.monotonic()) * 1000) + 1))

    def _drain_monitor(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            self._ledger.on_event(event["event"], event["value"])

    def _drain_router(self) -> bool:
        """Handles up to _BATCH frames; True when none are left waiting."""
        for _ in range(_BATCH):
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            self._ledger.on_frame(_source_fd(parts[-1]))
            if len(parts) != 2:   # [identity, frame]; a multipart request is not ours
                self._counts["dropped_frames"] += 1
                continue
            self._on_frame(parts[0].bytes, parts[1].bytes)
            self._flush()
        return False

    def _flush(self) -> None:
        outbox, self._table.outbox = self._table.outbox, []
        for identity, frame in outbox:
            try:
                self._router.send_multipart([identity, frame], zmq.NOBLOCK)
            except zmq.Again:   # that client's queue is full: it is not reading
                self._counts["dropped_replies"] += 1

    # --- requests ---

    def _on_frame(self, identity: bytes, frame: bytes) -> None:
        try:
            request_id, op, args = proto.decode(frame)
        except proto.MalformedFrame:
            self._counts["dropped_frames"] += 1
            return
        try:
            self._dispatch(identity, request_id, op, args)
        except Exception:   # a bug must not kill the rendezvous for the whole job
            self._counts["internal_errors"] += 1
            _log.exception("store server: request %r failed", op)
            self._reply(identity, request_id, proto.ERROR, f"internal error serving {op!r}")

    def _dispatch(self, identity: bytes, request_id: int, op: str, args) -> None:
        if not proto.args_fit(op, args):
            self._counts["dropped_frames"] += 1
            if self._gate.trusts(identity):   # say why; strangers get nothing back
                self._reply(identity, request_id, proto.ERROR, f"unknown op or bad args: {op!r}")
            return
        if op in ("hello", "auth"):
            return self._handshake(identity, request_id, op, args)
        if not self._gate.trusts(identity):
            self._counts["refused"] += 1
            return self._reply(identity, request_id, proto.REFUSED, "authenticate first")
        self._counts["requests"] += 1
        try:
            result = _OPS[op](self, identity, request_id, *args)
        except _BadRequest as exc:
            return self._reply(identity, request_id, proto.ERROR, str(exc))
        if result is not _PARKED:
            self._reply(identity, request_id, proto.OK, result)

    def _handshake(self, identity: bytes, request_id: int, op: str, args: list) -> None:
        if op == "hello":
            nonce, version = args
            if version != proto.PROTOCOL_VERSION:
                return self._reply(identity, request_id, proto.ERROR,
                                   f"store protocol {version} unsupported; server speaks "
                                   f"{proto.PROTOCOL_VERSION} (mixed ringrt versions?)")
            answer = self._gate.hello(identity, nonce) + [self.max_frame_bytes]
            return self._reply(identity, request_id, proto.OK, answer)
        refusal = self._gate.verify(identity, args[0])
        if refusal is None:
            return self._reply(identity, request_id, proto.OK, None)
        if refusal == proto.AUTH_FAILED:
            self._counts["auth_failures"] += 1
            return self._reply(identity, request_id, proto.AUTH_FAILED, "token mismatch")
        self._counts["refused"] += 1
        self._reply(identity, request_id, proto.ERROR, refusal)

    def _reply(self, identity: bytes, request_id: int, status: str, payload) -> None:
        self._table.outbox.append((identity, proto.encode(request_id, status, payload)))

    # --- ops: (server, identity, request_id, *args) -> result, or _PARKED ---

    def _op_set(self, identity, request_id, key, value):
        self._table.put(key, value)

    def _op_get(self, identity, request_id, key, timeout):
        self._table.park(identity, request_id, [key], key, timeout, time.monotonic())
        return _PARKED

    def _op_wait(self, identity, request_id, keys, timeout):
        self._table.park(identity, request_id, keys, None, timeout, time.monotonic())
        return _PARKED

    def _op_add(self, identity, request_id, key, amount):
        return self._table.add(key, amount)

    def _op_compare_set(self, identity, request_id, key, expected, desired):
        return self._table.compare_set(key, expected, desired)

    def _op_check(self, identity, request_id, keys):
        return all(key in self._table.values for key in keys)

    def _op_delete_key(self, identity, request_id, key):
        return self._table.values.pop(key, None) is not None

    def _op_num_keys(self, identity, request_id):
        return len(self._table.values)


def _source_fd(frame: zmq.Frame) -> int:
    """The fd a frame arrived on (ZMQ_SRCFD: deprecated by libzmq, still in 4.3); -1 if unknown."""
    try:
        return frame.get(zmq.SRCFD)
    except zmq.ZMQError:
        return -1


_PARKED = object()   # the op parked the request; the table answers it later
_OPS = {
    name: getattr(StoreServer, f"_op_{name}")
    for name in proto.ARG_SHAPES
    if hasattr(StoreServer, f"_op_{name}")
}
