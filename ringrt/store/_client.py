"""The rendezvous key-value store client (c10d ``TCPStore`` semantics) and ``PrefixStore``.

Ranks find each other through a small key-value store served by rank 0 (or ``ringrun``)::

    store = Store(master_addr, 29500, is_master=(rank == 0), rank=rank)
    store.set(f"addr/{rank}", my_address)
    peer = store.get("addr/0")          # blocks until rank 0 has set it
    store.add("joined", 1)              # atomic counter, stored as decimal ASCII like torch

Each thread borrows its own authenticated connection from a small pool, so a ``get`` blocked
on one thread does not hold up a ``set`` on another. Blocking ``get``/``wait`` are parked on
the server, which answers when the key is set or the timeout passes; the client's own
deadline (timeout plus a short grace) covers a server that stops answering. The wire format
and handshake are described in ``_protocol``; the connections and their pool are
``_connection``; the server is ``_server`` (with ``_table``, ``_gate`` and ``_ledger``).
"""

from __future__ import annotations

import datetime
import ipaddress
import numbers
from collections.abc import Iterable

from ringrt import _curve
from ringrt._deadline import Deadline, seconds
from ringrt._settings import read_setting
from ringrt.errors import StoreError, TimeoutError
from ringrt.store import _protocol as proto
from ringrt.store._connection import _Connection, _ConnectionLost, _NoReply, _Peer, _Pool
from ringrt.store._server import StoreServer

__all__ = ["Store", "PrefixStore"]

_REPLY_GRACE = 0.5          # s a parked get/wait waits past its timeout for the server's answer

Bytesish = bytes | bytearray | memoryview | str


# --- the public client ------------------------------------------------------------------


class Store:
    """A client of the rendezvous store, optionally hosting its server (like c10d TCPStore).

    After ``init_process_group`` the job's store is ``dist.get_store()``.

    Example::

        store = Store("10.0.0.1", 29500, is_master=(rank == 0), rank=rank, timeout=60)
        store.set("ready/1", b"yes")
        store.get("ready/1")             # b'yes'
        store.add("count", 2)            # 2
        store.close()

    Args:
        host: the server's address (MASTER_ADDR).
        port: the server's port (MASTER_PORT); 0 with ``is_master`` picks a free one.
        token: the job token; None reads ``RINGRT_TOKEN`` (empty when unset).
        is_master: host a :class:`StoreServer` on a thread of this process first. It binds
            ``host`` when that is an IP address, else every interface, as torch does (a host
            name may resolve to a loopback alias such as 127.0.1.1 on its own machine).
        timeout: default limit in seconds (or ``timedelta``) for connecting and for each op.
        rank: this process's rank, quoted in error messages.
        curve: CurveZMQ keys (``_curve.derive_keys(token)``) to encrypt the connections, for
            jobs run with encryption; the server must use the same keys.

    Raises:
        TimeoutError: no store server answered within ``timeout``.
        AuthenticationError: the server holds a different token.
        StoreError: the server could not be started (``is_master``) or reached.
    """

    def __init__(self, host: str, port: int, token: str | None = None, *,
                 is_master: bool = False, timeout: float | datetime.timedelta = 300.0,
                 rank: int | None = None, curve: _curve.CurveKeys | None = None):
        self.host, self.rank = host, rank
        self.timeout = _limit(timeout, "timeout")
        self.port = _check_port(port, is_master)
        token = read_setting("RINGRT_TOKEN") if token is None else token
        if not isinstance(token, str):
            raise TypeError(f"Store: token must be str, got {type(token).__name__}")
        self._server = None
        if is_master:
            self._server = StoreServer(_bind_host(host), self.port, token, curve=curve).start()
            self.port = self._server.port
        self._peer = _Peer(host, self.port, rank)
        self._pool = _Pool(
            lambda deadline: _Connection.open(self._peer, token, curve, deadline))
        try:
            self._call(None, [], f"connecting to the store server at {host}:{self.port}", None)
        except BaseException:
            self.close()
            raise

    def set(self, key: str, value: Bytesish) -> None:
        """Stores ``value`` under ``key``, waking every ``get``/``wait`` on it."""
        self._call("set", [_key(key), _bytes(value, "value")], f"store.set({key!r})")

    def get(self, key: str, timeout: float | datetime.timedelta | None = None) -> bytes:
        """Returns the value of ``key``, waiting until some rank sets it.

        Raises:
            TimeoutError: ``key`` was not set within ``timeout`` (default: the store's).
        """
        limit = self._op_limit(timeout)
        value = self._call("get", [_key(key), limit], f"store.get({key!r})", limit, parked=True)
        return self._typed(value, bytes, "get")

    def add(self, key: str, amount: int) -> int:
        """Atomically adds ``amount`` to the integer under ``key`` (0 when missing); returns it."""
        if not isinstance(amount, numbers.Integral) or not proto.is_int64(int(amount)):
            raise TypeError(f"store.add({key!r}): amount must be an int64, got {amount!r}")
        total = self._call("add", [_key(key), int(amount)], f"store.add({key!r})")
        return self._typed(total, int, "add")

    def compare_set(self, key: str, expected: Bytesish, desired: Bytesish) -> bytes:
        """Sets ``key`` to ``desired`` if it holds ``expected``; returns the value now held.

        As torch's TCPStore: a missing key with an empty ``expected`` is set to ``desired``;
        a missing key with a non-empty ``expected`` stays missing and ``expected`` is returned.
        """
        args = [_key(key), _bytes(expected, "expected"), _bytes(desired, "desired")]
        value = self._call("compare_set", args, f"store.compare_set({key!r})")
        return self._typed(value, bytes, "compare_set")

    def wait(self, keys: Iterable[str], timeout: float | datetime.timedelta | None = None) -> None:
        """Blocks until every key in ``keys`` exists.

        Raises:
            TimeoutError: some key was still missing after ``timeout`` (default: the store's).
        """
        keys = _keys(keys)
        limit = self._op_limit(timeout)
        self._call("wait", [keys, limit], f"store.wait({keys!r})", limit, parked=True)

    def check(self, keys: Iterable[str]) -> bool:
        """True when every key in ``keys`` exists; never blocks."""
        keys = _keys(keys)
        return self._typed(self._call("check", [keys], f"store.check({keys!r})"), bool, "check")

    def delete_key(self, key: str) -> bool:
        """Deletes ``key``; True when it existed."""
        deleted = self._call("delete_key", [_key(key)], f"store.delete_key({key!r})")
        return self._typed(deleted, bool, "delete_key")

    def num_keys(self) -> int:
        """The number of keys in the store."""
        return self._typed(self._call("num_keys", [], "store.num_keys()"), int, "num_keys")

    def server_stats(self) -> dict | None:
        """The hosted server's counters (``StoreServer.stats``) when ``is_master``, else None."""
        return self._server.stats() if self._server is not None else None

    def close(self) -> None:
        """Closes the connections, and stops the hosted server when ``is_master``. Idempotent."""
        self._pool.close()
        if self._server is not None:
            self._server.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        role = ", is_master=True" if self._server else ""
        return f"Store({self.host!r}, {self.port}{role}, rank={self.rank})"

    # --- plumbing ---

    def _op_limit(self, timeout: float | datetime.timedelta | None) -> float:
        limit = self.timeout if timeout is None else _limit(timeout, "timeout")
        return min(limit, proto.MAX_WAIT_SECONDS)

    def _call(self, op: str | None, args: list, what: str, limit: float | None = None, *,
              parked: bool = False) -> object:
        """Runs one request (``op`` None: just connect) and returns its payload."""
        limit = self.timeout if limit is None else limit
        deadline = Deadline(limit + (_REPLY_GRACE if parked else 0.0))
        try:
            with self._pool.borrow(deadline) as connection:
                if op is None:
                    return None
                status, payload = connection.request(op, args, deadline)
        except _NoReply:
            raise TimeoutError(what, None, [], limit, self.rank,
                               hint=self._peer.unreachable_hint()) from None
        except _ConnectionLost:
            raise StoreError(
                f"{what}{self._peer.who}: lost the connection to the store server at "
                f"{self.host}:{self.port} before its reply; the server (rank 0 / ringrun) has "
                "probably exited, see its log.") from None
        return self._unwrap(status, payload, what, limit)

    def _unwrap(self, status: str, payload: object, what: str, limit: float) -> object:
        if status == proto.OK:
            return payload
        if status == proto.TIMEOUT:
            raise TimeoutError(what, None, [], limit, self.rank, hint=(
                f"Still missing: {payload!r}. The rank expected to set it may have failed or be "
                "slower: check its log, or pass a longer timeout."))
        if status == proto.ERROR:
            raise StoreError(f"{what} failed{self._peer.who}: the store server at "
                             f"{self.host}:{self.port} answered: {payload}")
        raise StoreError(f"{what}{self._peer.who}: unexpected reply {status!r} from the store "
                         f"server at {self.host}:{self.port}")

    def _typed(self, value: object, kind: type, op: str):
        if type(value) is not kind:
            raise StoreError(f"store.{op}{self._peer.who}: the store server at {self.host}:"
                             f"{self.port} sent a {type(value).__name__}, expected {kind.__name__}")
        return value


class PrefixStore:
    """A view of ``store`` whose keys are prefixed with ``prefix + "/"`` (torch PrefixStore).

    Example::

        group_store = PrefixStore("group1", store)
        group_store.set("x", b"1")       # sets "group1/x" in `store`

    ``num_keys`` counts every key of the underlying store, as torch's does.
    """

    def __init__(self, prefix: str, store: Store | PrefixStore):
        if not isinstance(prefix, str):
            raise TypeError(f"PrefixStore: prefix must be str, got {type(prefix).__name__}")
        self.prefix, self.underlying_store = prefix, store

    def set(self, key: str, value: Bytesish) -> None:
        """See :meth:`Store.set`."""
        self.underlying_store.set(self._key(key), value)

    def get(self, key: str, timeout: float | datetime.timedelta | None = None) -> bytes:
        """See :meth:`Store.get`."""
        return self.underlying_store.get(self._key(key), timeout)

    def add(self, key: str, amount: int) -> int:
        """See :meth:`Store.add`."""
        return self.underlying_store.add(self._key(key), amount)

    def compare_set(self, key: str, expected: Bytesish, desired: Bytesish) -> bytes:
        """See :meth:`Store.compare_set`."""
        return self.underlying_store.compare_set(self._key(key), expected, desired)

    def wait(self, keys: Iterable[str], timeout: float | datetime.timedelta | None = None) -> None:
        """See :meth:`Store.wait`."""
        self.underlying_store.wait([self._key(key) for key in _keys(keys)], timeout)

    def check(self, keys: Iterable[str]) -> bool:
        """See :meth:`Store.check`."""
        return self.underlying_store.check([self._key(key) for key in _keys(keys)])

    def delete_key(self, key: str) -> bool:
        """See :meth:`Store.delete_key`."""
        return self.underlying_store.delete_key(self._key(key))

    def num_keys(self) -> int:
        """See :meth:`Store.num_keys` (counts the underlying store's keys)."""
        return self.underlying_store.num_keys()

    def close(self) -> None:
        """Does nothing: the underlying store is shared; close it where it was made."""

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_key(key)}"


# --- argument checks (before the first byte) --------------------------------------------


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"store keys must be str, got {type(key).__name__} ({key!r})")
    return key


def _keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, (str, bytes)):
        raise TypeError(f"store keys must be a list of str, got a single {type(keys).__name__}"
                        f" {keys!r}; wrap it: [{keys!r}]")
    return [_key(key) for key in keys]


def _bytes(value: object, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"store {name} must be bytes or str, got {type(value).__name__}")


def _limit(timeout: float | datetime.timedelta, name: str) -> float:
    if timeout is None:
        raise ValueError(f"Store: {name} must be a number of seconds or a timedelta, not None "
                         "(every wait in ringrt is bounded)")
    return seconds(timeout)


def _check_port(port: object, is_master: bool) -> int:
    if isinstance(port, bool) or not isinstance(port, numbers.Integral) \
            or not 0 <= int(port) <= 65535:
        raise ValueError(f"Store: port must be an int in 0..65535, got {port!r}")
    if port == 0 and not is_master:
        raise ValueError("Store: port 0 only makes sense with is_master=True (pick a free "
                         "port); clients need the server's real port")
    return int(port)


def _bind_host(host: str) -> str:
    """The address the hosted server binds: ``host`` if it is an IP address, else all."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "*"
    return host
