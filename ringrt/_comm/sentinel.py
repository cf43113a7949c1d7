"""Heartbeats: notice within seconds when a peer dies, is cut off, or fails.

A daemon thread per rank owns a ``ROUTER`` socket (peers' heartbeats come in; a second one
on tcp when a peer runs on another host, secured like the data plane's tcp inbox) and one
``DEALER`` per peer (ours go out), separate from the data plane so heartbeats flow while a
collective is busy. Every ``interval`` seconds it tells each peer "alive". A peer is *lost*
when it
- closed its connection to us without saying goodbye first and was not heard from again
  (its process exited or was killed: the kernel closes its sockets, so this is seen within
  ~``departure_grace``; a connection that drops and comes back is forgiven),
- has not been heard from for ``timeout`` seconds (frozen, or its link is cut),
- announced a failure (an unhandled exception; see ``announce_failure``),
- refused our credentials when we connected (its tcp socket failed the handshake: the ranks
  disagree about RINGRT_TOKEN or RINGRT_ENCRYPT), or
- said goodbye (``destroy_process_group``) and ``departure_grace`` seconds have passed —
  the grace lets its last in-flight data arrive first.

The op thread reads :attr:`Sentinel.lost` while it waits; nothing here blocks a collective.
Messages are msgpack ``[kind, rank, text]``; anything else is dropped and counted.
"""

from __future__ import annotations

import queue
import threading
import time

import msgpack
import zmq
from zmq.utils.monitor import parse_monitor_message

from ringrt._comm.wakepipe import WakePipe
from ringrt._settings import Settings

HEARTBEAT, FAILED, GOODBYE = "hb", "failed", "bye"
_REFUSED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
REFUSED_REASON = ("it refused this rank's credentials: every rank must have the same "
                  "RINGRT_TOKEN and RINGRT_ENCRYPT")
LEFT_REASON = "it left the group (destroy_process_group or exit)"   # a goodbye, not a failure


class Sentinel:
    """Exchange heartbeats with every peer and keep the set of lost peers up to date."""

    def __init__(self, context: zmq.Context, rank: int, endpoints,
                 settings: Settings | None = None):
        settings = Settings.read() if settings is None else settings
        self.rank = rank
        self.interval = settings.heartbeat_interval
        self.timeout = settings.heartbeat_timeout
        self.departure_grace = 1.0
        self.lost: dict[int, str] = {}        # rank -> why; read by the op thread
        self._departed: dict[int, float] = {}
        self._context = context
        self._endpoints = endpoints
        self._router = self._new_router()
        self._routers = [self._router]
        self.card = endpoints.bind_local(self._router, f"{rank}.h")
        self.dropped = 0                      # malformed heartbeat messages
        self.disconnects = 0                  # peer connections that dropped (maybe came back)
        self._dealers: dict[int, zmq.Socket] = {}
        self._last_heard: dict[int, float] = {}
        self._disconnected: dict[int, float] = {}
        self._monitors: dict[zmq.Socket, int] = {}
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._outgoing: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._wake = WakePipe()               # stop() and announcements end a poll at once
        self._poller.register(self._wake.fd, zmq.POLLIN)
        self._thread: threading.Thread | None = None

    def _new_router(self) -> zmq.Socket:
        router = self._context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        return router

    def open_network(self) -> dict:
        """Listen on tcp too (call before :meth:`start`); returns the card's tcp part."""
        network = self._router if self.card.get("ipc") is None else self._new_router()
        if network is not self._router:
            self._routers.append(network)
            self._poller.register(network, zmq.POLLIN)
        tcp = self._endpoints.bind_network(network)
        self.card = {**self.card, **tcp}
        return tcp

    def start(self, cards: dict[int, dict]) -> None:
        """Connect to every peer's heartbeat socket and start the thread."""
        now = time.monotonic()
        for peer, card in cards.items():
            if peer == self.rank:
                continue
            dealer = self._context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.SNDHWM, 64)
            dealer.setsockopt(zmq.LINGER, 1000)
            monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED | _REFUSED)
            self._monitors[monitor] = peer
            self._poller.register(monitor, zmq.POLLIN)
            self._endpoints.connect(dealer, card)
            self._dealers[peer] = dealer
            self._last_heard[peer] = now
        self._thread = threading.Thread(target=self._run, name=f"ringrt-sentinel-{self.rank}",
                                        daemon=True)
        self._thread.start()

    def announce_failure(self, reason: str, wait: float = 2.0) -> None:
        """Tell every peer this rank failed (before it exits), waiting up to ``wait`` s."""
        self._announce(FAILED, reason, wait)

    def say_goodbye(self, wait: float = 2.0) -> None:
        """Tell every peer this rank is leaving the group normally."""
        self._announce(GOODBYE, "", wait)

    def _announce(self, kind: str, text: str, wait: float) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        sent = threading.Event()
        self._outgoing.put((kind, text, sent))
        self._wake.ring()
        sent.wait(wait)

    def stop(self) -> None:
        """Stop the thread and close the sockets (bounded)."""
        self._stop.set()
        self._wake.ring()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._thread is None or not self._thread.is_alive():
            self._wake.close()
        for monitor in self._monitors:
            monitor.close(0)
        for dealer in self._dealers.values():
            dealer.close()
        for router in self._routers:
            router.close(0)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_beat:
                self._broadcast(HEARTBEAT, "")
                next_beat = now + self.interval
            self._send_announcements()
            # sleep until the next heartbeat or the next verdict that may fall due, unless a
            # message, an event or a ring (stop, an announcement) comes first
            until = min(next_beat, self._next_verdict())
            ready = dict(self._poller.poll(max(1, int((until - now) * 1000) + 1)))
            if self._wake.fd in ready:
                self._wake.drain()
            for router in self._routers:
                if router in ready:
                    self._drain(router)
            for monitor, peer in self._monitors.items():
                if monitor in ready:
                    self._note_events(monitor, peer)
            self._judge(time.monotonic())

    def _broadcast(self, kind: str, text: str) -> None:
        message = msgpack.packb([kind, self.rank, text])
        for peer, dealer in self._dealers.items():
            if peer in self.lost:
                continue
            try:
                dealer.send(message, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass       # a full queue means the peer is not reading; the timeout decides

    def _send_announcements(self) -> None:
        while True:
            try:
                kind, text, sent = self._outgoing.get_nowait()
            except queue.Empty:
                return
            self._broadcast(kind, text)
            sent.set()

    def _drain(self, router: zmq.Socket) -> None:
        while True:
            try:
                _identity, raw = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except (zmq.ZMQError, ValueError):
                self.dropped += 1
                continue
            try:
                kind, peer, text = msgpack.unpackb(raw)
            except Exception:  # noqa: BLE001 - garbage from the network is dropped
                self.dropped += 1
                continue
            if type(peer) is not int or peer not in self._last_heard:
                self.dropped += 1
                continue
            self._last_heard[peer] = time.monotonic()
            if kind == FAILED:
                self.lost.setdefault(peer, f"it failed and exited: {text}")
            elif kind == GOODBYE:
                self._departed.setdefault(peer, time.monotonic())

    def _note_events(self, monitor: zmq.Socket, peer: int) -> None:
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))["event"]
            except zmq.ZMQError:
                return
            if event & _REFUSED:       # the peer's tcp socket would not take our credentials
                self.lost.setdefault(peer, REFUSED_REASON)
                continue
            self.disconnects += 1
            self._disconnected.setdefault(peer, time.monotonic())

    def _next_verdict(self) -> float:
        """The earliest time :meth:`_judge` could find a peer lost with nothing heard."""
        due = float("inf")
        for peer, heard in self._last_heard.items():
            if peer in self.lost:
                continue
            left = self._departed.get(peer)
            closed = self._disconnected.get(peer)
            if left is not None:
                due = min(due, left + self.departure_grace)
            elif closed is not None:
                due = min(due, closed + self.departure_grace)
            else:
                due = min(due, heard + self.timeout)
        return due

    def _judge(self, now: float) -> None:
        for peer, heard in self._last_heard.items():
            if peer in self.lost:
                continue
            left = self._departed.get(peer)
            closed = self._disconnected.get(peer)
            if closed is not None and heard > closed:
                # zmq reconnected and the peer spoke again (a transient drop, not a death)
                del self._disconnected[peer]
                closed = None
            if left is not None and now - left > self.departure_grace:
                self.lost[peer] = LEFT_REASON
            elif left is None and closed is not None and now - closed > self.departure_grace:
                self.lost[peer] = ("its connection closed without a goodbye (the process "
                                   "exited or was killed)")
            elif left is None and now - heard > self.timeout:
                self.lost[peer] = (
                    f"no heartbeat for {now - heard:.1f} s (killed, frozen, or its link is cut)"
                )
