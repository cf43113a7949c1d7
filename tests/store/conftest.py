"""Fixtures for the store tests: a server on a free port and clients connected to it."""

from __future__ import annotations

import pytest

from ringrt.store import Store
from ringrt.store._server import StoreServer
from tests.store._util import HOST, TOKEN


@pytest.fixture
def server():
    """A StoreServer on 127.0.0.1 with a free port and a 64 KiB frame cap, closed afterwards."""
    with StoreServer(HOST, 0, TOKEN, max_frame_bytes=1 << 16) as running:
        yield running


@pytest.fixture
def connect(server):
    """Factory for clients of ``server``; every client is closed after the test."""
    clients = []

    def make(token: str = TOKEN, **kwargs) -> Store:
        kwargs.setdefault("timeout", 5.0)
        store = Store(HOST, server.port, token, **kwargs)
        clients.append(store)
        return store

    yield make
    for store in clients:
        store.close()


@pytest.fixture
def store(connect):
    """One client of ``server``, as rank 1."""
    return connect(rank=1)
