"""Adapters between torch's c10d ``Store`` and ringrt's :class:`ringrt.Store`, both ways.

- :class:`TorchStoreOverRingrt` is a torch ``Store`` whose keys live in ringrt's authenticated
  store. Under ``ringrun`` (which hosts ringrt's store on ``MASTER_PORT``) it is what
  ``env://`` hands torch, so torch's own bookkeeping -- and gloo groups made in the same job --
  goes through ringrt's store and its token check instead of a second, unauthenticated
  TCPStore (``_rendezvous``).
- :class:`StoreOverTorch` gives the store torch hands a backend (a TCPStore under
  ``torchrun`` / ``tcp://``, a prefix of the adapter above under ``ringrun``) the interface
  ringrt's process group rendezvouses through, translating torch's store errors into
  ringrt's (a timeout becomes ``ringrt.errors.TimeoutError`` naming what was awaited).

A Python subclass of torch's ``Store`` must outlive every C++ reference to it; torch does
not keep the Python half alive, so every adapter is held in ``_ALIVE`` until :func:`release`.
"""

from __future__ import annotations

import datetime

import torch.distributed as dist

from ringrt._deadline import seconds
from ringrt.errors import StoreError, TimeoutError

_ALIVE: set = set()


class TorchStoreOverRingrt(dist.Store):
    """A torch ``Store`` over ringrt's ``store``, every key under ``prefix``.

    Args:
        store: a connected :class:`ringrt.Store`.
        prefix: key prefix (e.g. per job attempt, so a restarted job never reads the keys of
            the attempt before it: ringrun's store outlives its workers).
    """

    def __init__(self, store, prefix: str):
        super().__init__()
        self.ringrt_store, self.prefix = store, prefix
        _ALIVE.add(self)

    def set(self, key: str, value) -> None:
        self.ringrt_store.set(self.prefix + key, _as_bytes(value))

    def get(self, key: str) -> bytes:
        return self.ringrt_store.get(self.prefix + key)

    def add(self, key: str, amount: int) -> int:
        return self.ringrt_store.add(self.prefix + key, amount)

    def compare_set(self, key: str, expected, desired) -> bytes:
        return self.ringrt_store.compare_set(self.prefix + key, _as_bytes(expected),
                                             _as_bytes(desired))

    def wait(self, keys, timeout: datetime.timedelta | None = None) -> None:
        self.ringrt_store.wait([self.prefix + k for k in keys], timeout)

    def check(self, keys) -> bool:
        return self.ringrt_store.check([self.prefix + k for k in keys])

    def delete_key(self, key: str) -> bool:
        return self.ringrt_store.delete_key(self.prefix + key)

    def num_keys(self) -> int:
        return self.ringrt_store.num_keys()

    # torch's C++ side looks these two up by their C++ names
    deleteKey = delete_key
    getNumKeys = num_keys

    def clone(self) -> TorchStoreOverRingrt:
        return TorchStoreOverRingrt(self.ringrt_store, self.prefix)

    def close(self) -> None:
        """Forget this adapter and close the ringrt store under it."""
        release(self)
        self.ringrt_store.close()


def release(store) -> None:
    """Drop the reference that kept an adapter alive (once torch no longer uses it)."""
    _ALIVE.discard(store)


class StoreOverTorch:
    """ringrt's store interface over a torch ``Store`` (what ``ProcessGroup`` rendezvouses
    through): ``set``, ``get(key, timeout)``, ``add``, ``compare_set``, ``wait``, ``check``,
    ``delete_key``, ``num_keys``, plus ``host``/``port`` of the server behind it.

    Args:
        store: the torch store (any prefix chain).
        rank: this rank, quoted in errors.
        default_host: the master's address when the store cannot tell (a FileStore or
            HashStore has no server); ringrt listens on the interface that routes to it.
    """

    def __init__(self, store: dist.Store, rank: int, default_host: str = "127.0.0.1"):
        self.torch_store, self.rank = store, rank
        bottom = _bottom(store)
        if isinstance(bottom, TorchStoreOverRingrt):
            bottom = bottom.ringrt_store
        self.host = getattr(bottom, "host", None) or default_host
        self.port = getattr(bottom, "port", 0)
        self.timeout = seconds(store.timeout)

    def set(self, key: str, value) -> None:
        self._call(f"store.set({key!r})", self.torch_store.set, key, _as_bytes(value))

    def get(self, key: str, timeout=None) -> bytes:
        if timeout is not None:
            self.wait([key], timeout)
        return self._call(f"store.get({key!r})", self.torch_store.get, key)

    def add(self, key: str, amount: int) -> int:
        return self._call(f"store.add({key!r})", self.torch_store.add, key, amount)

    def compare_set(self, key: str, expected, desired) -> bytes:
        return self._call(f"store.compare_set({key!r})", self.torch_store.compare_set, key,
                          _as_bytes(expected), _as_bytes(desired))

    def wait(self, keys, timeout=None) -> None:
        limit = self.timeout if timeout is None else seconds(timeout)
        self._call(f"store.wait({list(keys)!r})", self.torch_store.wait, list(keys),
                   datetime.timedelta(seconds=limit), limit=limit)

    def check(self, keys) -> bool:
        return self._call(f"store.check({list(keys)!r})", self.torch_store.check, list(keys))

    def delete_key(self, key: str) -> bool:
        return self._call(f"store.delete_key({key!r})", self.torch_store.delete_key, key)

    def num_keys(self) -> int:
        return self._call("store.num_keys()", self.torch_store.num_keys)

    def close(self) -> None:
        """Nothing to close: torch owns its store."""

    def _call(self, what: str, method, *args, limit: float | None = None):
        try:
            return method(*args)
        except (TimeoutError, StoreError):
            raise                                    # ringrt's store underneath said it
        except dist.DistError as exc:
            if "timeout" in str(exc).lower():
                raise TimeoutError(what, None, [], self.timeout if limit is None else limit,
                                   self.rank, hint=f"torch's store at {self.host}:{self.port} "
                                   f"said: {exc}") from exc
            raise StoreError(f"{what} failed on rank {self.rank}: torch's store at "
                             f"{self.host}:{self.port} said: {exc}") from exc


def _bottom(store):
    """The store at the bottom of a chain of torch PrefixStores."""
    while isinstance(store, dist.PrefixStore):
        store = store.underlying_store
    return store


def _as_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return bytes(value)                 # a list of ints, as some torch callers pass
