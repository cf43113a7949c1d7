"""The rendezvous key-value store (c10d ``TCPStore`` semantics): ``Store`` and ``PrefixStore``.

Ranks find each other through a small key-value store served by rank 0 (or ``ringrun``). The
package, client side first::

    _client.py      Store and PrefixStore, the public client
    _connection.py  authenticated DEALER connections and the per-thread pool
    _protocol.py    the wire format (msgpack frames) and the token handshake
    _server.py      StoreServer: one ROUTER socket served by a daemon thread
    _table.py       keys, values and parked get/wait requests (pure logic)
    _gate.py        the token handshake and who has passed it (pure logic)
    _ledger.py      connection accounting from socket-monitor events (pure logic)
"""

from ringrt.store._client import PrefixStore, Store

__all__ = ["Store", "PrefixStore"]
