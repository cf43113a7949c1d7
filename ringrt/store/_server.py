"""The rendezvous store server: one ROUTER socket served by a daemon thread.

Layers, bottom up: :class:`_Table` (``_table``) holds keys, values and parked get/wait
requests (pure logic, no sockets); :class:`_Gatekeeper` (``_gate``) runs the token
handshake and remembers authenticated ZMQ identities; :class:`_ConnectionLedger`
(``_ledger``) turns socket-monitor events into connection counters; :class:`StoreServer`
owns the sockets and the loop. The wire format is in ``_protocol``.

Nothing from the network can stop the loop: malformed frames are dropped and counted,
requests from peers that have not authenticated are refused and counted, frames of an
authenticated session whose tag does not verify (forged, altered, spliced from another
connection) or whose request id is not new (replayed) are dropped and counted, and libzmq
closes connections whose frames exceed ``max_frame_bytes`` before buffering them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from ringrt import _curve
from ringrt.errors import StoreError
from ringrt.store import _protocol as proto
from ringrt.store._gate import _Gatekeeper
from ringrt.store._ledger import _MONITORED, _ConnectionLedger
from ringrt.store._table import _BadRequest, _Table

__all__ = ["StoreServer"]

_log = logging.getLogger(__name__)

_POLL_MS = 1000                # loop wakes at least this often: close() wakes it, and parked
                               # requests' expiries set a shorter poll (a rank may host this
                               # thread: each wake takes the GIL from its ops)
_BATCH = 256                   # frames handled per wake-up before looking at the monitor again
_HANDSHAKE_IVL_MS = 10_000     # libzmq drops a connection that has not finished ZMTP by then


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
            ("requests", "dropped_frames", "refused", "auth_failures", "forged_frames",
             "replayed_frames", "dropped_replies", "internal_errors"), 0)
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
        ``refused`` counts requests from peers that had not authenticated (or unsealed
        requests on an authenticated connection); ``forged_frames`` sealed frames whose tag
        did not verify; ``replayed_frames`` sealed frames with a request id already used;
        ``clients`` counts successful authentications.
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
                self._router.send_multipart([identity, self._gate.seal(identity, frame)],
                                            zmq.NOBLOCK)
            except zmq.Again:   # that client's queue is full: it is not reading
                self._counts["dropped_replies"] += 1

    # --- requests ---

    def _on_frame(self, identity: bytes, frame: bytes) -> None:
        sealed = proto.is_sealed(frame)
        if sealed:
            frame = self._unseal(identity, frame)
            if frame is None:
                return
        try:
            request_id, op, args = proto.decode(frame)
        except proto.MalformedFrame:
            self._counts["dropped_frames"] += 1
            return
        session = self._gate.session(identity)
        if sealed and request_id <= session.last_request:
            self._counts["replayed_frames"] += 1
            return
        if sealed:
            session.last_request = request_id
        try:
            self._dispatch(identity, request_id, op, args, sealed)
        except Exception:   # a bug must not kill the rendezvous for the whole job
            self._counts["internal_errors"] += 1
            _log.exception("store server: request %r failed", op)
            self._reply(identity, request_id, proto.ERROR, f"internal error serving {op!r}")

    def _unseal(self, identity: bytes, frame: bytes) -> bytes | None:
        """The frame inside a sealed one, or None (counted) when it is not genuine."""
        session = self._gate.session(identity)
        if session is None:       # sealed without a session: the client must authenticate
            self._refuse_unknown(identity, frame)
            return None
        inner = proto.unseal(session.key, proto.TO_SERVER, frame)
        if inner is None:
            self._counts["forged_frames"] += 1
        return inner

    def _refuse_unknown(self, identity: bytes, sealed: bytes) -> None:
        """Tell a client whose session the server does not know (it was forgotten, or this
        is a new connection) to authenticate again, for the request id it used; a frame
        that only looks sealed is garbage."""
        try:
            request_id, _op, _args = proto.decode(sealed[1 + proto.TAG_BYTES:])
        except proto.MalformedFrame:
            self._counts["dropped_frames"] += 1
            return
        self._counts["refused"] += 1
        self._reply(identity, request_id, proto.REFUSED, "authenticate first")

    def _dispatch(self, identity: bytes, request_id: int, op: str, args, sealed: bool) -> None:
        if not proto.args_fit(op, args):
            self._counts["dropped_frames"] += 1
            if sealed:   # say why; strangers get nothing back
                self._reply(identity, request_id, proto.ERROR, f"unknown op or bad args: {op!r}")
            return
        if op in ("hello", "auth"):
            if sealed:
                self._counts["dropped_frames"] += 1
                return
            return self._handshake(identity, request_id, op, args)
        if not sealed:    # a stranger, or a plain frame injected into a session
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
