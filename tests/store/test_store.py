"""Store semantics (c10d TCPStore), tier 2: a server and its clients on threads of one process."""

from __future__ import annotations

import builtins
import datetime
import errno
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ringrt._deadline import Deadline
from ringrt.errors import StoreError, TimeoutError
from ringrt.store import PrefixStore, Store
from ringrt.store import _protocol as proto
from ringrt.store._server import StoreServer
from tests.store._util import HOST, TOKEN, eventually

pytestmark = pytest.mark.timeout(30)


def test_set_then_get_returns_bytes(store):
    store.set("text", "héllo")
    store.set("raw", b"\x00\xff")
    store.set("empty", b"")
    store.set("buffer", bytearray(b"abc"))
    assert store.get("text") == "héllo".encode()
    assert store.get("raw") == b"\x00\xff"
    assert store.get("empty") == b""
    assert store.get("buffer") == b"abc"


def test_set_overwrites(store):
    store.set("k", b"1")
    store.set("k", b"2")
    assert store.get("k") == b"2"


def test_add_counts_from_zero_and_stores_decimal_ascii(store):
    assert store.add("n", 5) == 5
    assert store.add("n", -7) == -2
    assert store.get("n") == b"-2"
    store.set("m", "41")
    assert store.add("m", 1) == 42
    assert store.add("zero", 0) == 0 and store.get("zero") == b"0"


def test_add_to_a_non_integer_value_is_refused(store):
    store.set("word", b"abc")
    with pytest.raises(StoreError, match="not an integer"):
        store.add("word", 1)
    assert store.get("word") == b"abc"


def test_add_overflowing_int64_is_refused(store):
    store.add("big", 2**63 - 1)
    with pytest.raises(StoreError, match="overflows int64"):
        store.add("big", 1)
    assert store.get("big") == str(2**63 - 1).encode()


def test_compare_set_missing_key_with_empty_expected_sets_desired(store):
    assert store.compare_set("k", b"", b"new") == b"new"
    assert store.get("k") == b"new"


def test_compare_set_missing_key_with_nonempty_expected_returns_expected(store):
    assert store.compare_set("k", b"old", b"new") == b"old"
    assert not store.check(["k"])


def test_compare_set_matching_value_is_replaced(store):
    store.set("k", b"old")
    assert store.compare_set("k", "old", "new") == b"new"
    assert store.get("k") == b"new"


def test_compare_set_mismatch_keeps_and_returns_current(store):
    store.set("k", b"current")
    assert store.compare_set("k", b"other", b"new") == b"current"
    assert store.get("k") == b"current"


def test_compare_set_existing_empty_value_matches_empty_expected(store):
    store.set("k", b"")
    assert store.compare_set("k", b"", b"x") == b"x"


def test_check_and_wait(store):
    assert store.check([])
    assert not store.check(["a", "b"])
    store.set("a", b"1")
    assert not store.check(["a", "b"])
    store.set("b", b"2")
    assert store.check(["a", "b"])
    store.wait(["a", "b"], timeout=1)


def test_wait_timeout_names_the_missing_keys(store):
    store.set("a", b"1")
    with pytest.raises(TimeoutError, match=r"Still missing: \['b'\]") as caught:
        store.wait(["a", "b"], timeout=0.2)
    assert caught.value.op == "store.wait(['a', 'b'])"


def test_delete_key_and_num_keys(store):
    assert store.num_keys() == 0
    store.set("a", b"1")
    store.add("b", 1)
    store.compare_set("c", b"", b"x")
    assert store.num_keys() == 3
    assert store.delete_key("a") is True
    assert store.delete_key("a") is False
    assert store.num_keys() == 2
    assert not store.check(["a"])


def test_get_blocks_until_another_client_sets(server, connect):
    waiter, setter = connect(rank=1), connect(rank=2)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(waiter.get, "late", 10)
        eventually(lambda: server.stats()["waiters"] == 1, what="the get to be parked")
        assert not pending.done()
        setter.set("late", b"here")
        assert pending.result(timeout=5) == b"here"
    assert server.stats()["waiters"] == 0


def test_wait_wakes_when_last_key_is_added(server, connect):
    waiter, setter = connect(), connect()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(waiter.wait, ["x", "y"], 10)
        eventually(lambda: server.stats()["waiters"] == 1, what="the wait to be parked")
        setter.add("x", 1)
        setter.compare_set("y", b"", b"made")
        assert pending.result(timeout=5) is None


def test_one_store_shared_by_threads_does_not_block_on_a_pending_get(server, store):
    # A get parked on one thread must not hold up a set from another thread on the same
    # Store (each thread borrows its own connection).
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(store.get, "key", 10)
        eventually(lambda: server.stats()["waiters"] == 1, what="the get to be parked")
        store.set("key", b"v")
        assert pending.result(timeout=5) == b"v"


def test_get_timeout_raises_timeout_error_in_time(server, store):
    start = time.monotonic()
    with pytest.raises(TimeoutError) as caught:
        store.get("never", timeout=0.3)
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 1.0
    error = caught.value
    assert isinstance(error, builtins.TimeoutError)
    assert (error.op, error.seq, error.ranks, error.timeout, error.rank) == (
        "store.get('never')", None, [], 0.3, 1)
    assert "never" in str(error) and "rank 1" in str(error)
    assert server.stats()["waiters"] == 0   # the parked get expired on the server too


def test_get_uses_the_store_timeout_and_accepts_timedelta(connect):
    store = connect(timeout=datetime.timedelta(milliseconds=200))
    with pytest.raises(TimeoutError):
        store.get("never")
    with pytest.raises(TimeoutError):
        store.get("never", timeout=datetime.timedelta(milliseconds=100))


def test_get_with_zero_timeout_answers_at_once(store):
    store.set("here", b"1")
    assert store.get("here", timeout=0) == b"1"
    with pytest.raises(TimeoutError):
        store.get("missing", timeout=0)


def test_late_reply_to_an_abandoned_request_is_discarded(store):
    store.set("k", b"v")
    with store._pool.borrow(Deadline(5)) as connection:
        # A reply to request id 10**9 (a request this client "gave up on") arrives first.
        connection._socket.send(proto.encode(10**9, "check", [["k"]]))
        status, payload = connection.request("get", ["k", 1.0], Deadline(5))
    assert (status, payload) == (proto.OK, b"v")


def test_concurrent_adds_from_16_clients_are_exact(connect):
    clients = [connect(rank=rank) for rank in range(16)]

    def add_many(client: Store) -> list[int]:
        return [client.add("counter", 1) for _ in range(50)]

    with ThreadPoolExecutor(16) as pool:
        results = [value for values in pool.map(add_many, clients) for value in values]
    assert sorted(results) == list(range(1, 801))
    assert clients[0].get("counter") == b"800"


def test_concurrent_adds_through_one_shared_store_are_exact(store):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.add("counter", 3), range(200)))
    assert sorted(results) == list(range(3, 601, 3))


def test_prefix_store_prefixes_every_key(store):
    group = PrefixStore("group1", store)
    nested = PrefixStore("inner", group)
    group.set("x", b"1")
    assert store.get("group1/x") == b"1"
    assert group.get("x") == b"1"
    assert group.add("n", 2) == 2 and store.get("group1/n") == b"2"
    assert group.compare_set("c", b"", b"v") == b"v" and store.get("group1/c") == b"v"
    nested.set("y", "2")
    assert store.get("group1/inner/y") == b"2"
    assert group.check(["x", "inner/y"]) and not group.check(["y"])
    group.wait(["x"], timeout=1)
    assert group.delete_key("x") and not store.check(["group1/x"])
    assert group.num_keys() == store.num_keys() == 3
    with pytest.raises(TimeoutError, match="group1/missing"):
        group.get("missing", timeout=0.1)


def test_is_master_hosts_the_server_on_a_free_port():
    with Store(HOST, 0, TOKEN, is_master=True, rank=0, timeout=5) as master:
        assert master.port > 0
        with Store(HOST, master.port, TOKEN, rank=1, timeout=5) as client:
            client.set("from-client", b"1")
            assert master.get("from-client") == b"1"
        port = master.port
    with pytest.raises(TimeoutError):   # close() stopped the hosted server
        Store(HOST, port, TOKEN, timeout=0.3)


def test_is_master_with_a_host_name_binds_every_interface():
    with Store("localhost", 0, TOKEN, is_master=True, timeout=5) as master:
        assert master._server.host == "*"
        with Store(HOST, master.port, TOKEN, timeout=5) as client:
            client.set("k", b"v")
            assert master.get("k") == b"v"


def test_token_defaults_to_ringrt_token_env(monkeypatch, server):
    monkeypatch.setenv("RINGRT_TOKEN", TOKEN)
    with Store(HOST, server.port, timeout=5) as client:
        client.set("k", b"v")


def test_unreachable_server_times_out_within_the_timeout():
    with socket.socket() as unused:   # bound, never listening: connections are refused
        unused.bind((HOST, 0))
        port = unused.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(TimeoutError) as caught:
            Store(HOST, port, TOKEN, timeout=0.5, rank=3)
        elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 1.0
    message = str(caught.value)
    assert f"{HOST}:{port}" in message and "rank 3" in message
    assert "rank 0" in message and "MASTER_ADDR" in message and "MASTER_PORT" in message


def test_client_started_before_its_server_connects_when_it_comes_up():
    # A worker may start before rank 0 binds the store; the client retries until its timeout.
    with socket.socket() as reserve:
        reserve.bind((HOST, 0))
        port = reserve.getsockname()[1]
    with ThreadPoolExecutor(1) as pool:
        early = pool.submit(Store, HOST, port, TOKEN, timeout=10)
        with StoreServer(HOST, port, TOKEN):
            client = early.result(timeout=10)
            client.set("k", b"v")
            assert client.get("k") == b"v"
            client.close()


def test_server_exit_fails_a_pending_get_promptly():
    master = Store(HOST, 0, TOKEN, is_master=True, timeout=5)
    client = Store(HOST, master.port, TOKEN, timeout=20)
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.get, "never", 20)
            eventually(lambda: master._server.stats()["waiters"] == 1, what="the parked get")
            start = time.monotonic()
            master.close()
            with pytest.raises(StoreError, match="lost the connection"):
                pending.result(timeout=10)
            assert time.monotonic() - start < 3
    finally:
        client.close()
        master.close()


def test_second_server_on_a_used_port_names_the_address(server):
    with pytest.raises(StoreError, match=rf"{HOST}:{server.port}.*port 0") as caught:
        StoreServer(HOST, server.port, TOKEN).start()
    assert caught.value.__cause__.errno == errno.EADDRINUSE
    with pytest.raises(StoreError, match="already in use|in use"):
        Store(HOST, server.port, TOKEN, is_master=True, timeout=1)


def test_close_is_idempotent_and_later_calls_fail(connect):
    store = connect()
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.set("k", b"v")


def test_server_close_is_prompt_with_parked_waiters(server, connect):
    store = connect()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(store.get, "never", 20)
        eventually(lambda: server.stats()["waiters"] == 1, what="the parked get")
        start = time.monotonic()
        server.close()
        server.close()
        assert time.monotonic() - start < 2
        with pytest.raises(StoreError):
            pending.result(timeout=10)


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda s: s.set(1, b"v"), TypeError),
        (lambda s: s.set("k", 3), TypeError),
        (lambda s: s.get(b"k"), TypeError),
        (lambda s: s.add("k", 1.5), TypeError),
        (lambda s: s.add("k", 2**63), TypeError),
        (lambda s: s.wait("ab"), TypeError),
        (lambda s: s.check(["a", 2]), TypeError),
        (lambda s: s.get("k", timeout=-1), ValueError),
        (lambda s: s.set("k", b"x" * (1 << 17)), ValueError),   # over the 64 KiB frame cap
    ],
)
def test_bad_arguments_are_rejected_before_sending(server, store, call, error):
    before = server.stats()
    with pytest.raises(error):
        call(store)
    after = server.stats()
    assert after["requests"] == before["requests"]
    assert after["dropped_frames"] == before["dropped_frames"]


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="port 0"):
        Store(HOST, 0, TOKEN)
    with pytest.raises(ValueError, match="port"):
        Store(HOST, 70000, TOKEN)
    with pytest.raises(ValueError, match="None"):
        Store(HOST, 1234, TOKEN, timeout=None)
