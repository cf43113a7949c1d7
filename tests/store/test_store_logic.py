"""Store logic without sockets (tier 1): the server's table, its connection ledger, the wire."""

from __future__ import annotations

import random

import msgpack
import pytest
import zmq

from ringrt.store import _protocol as proto
from ringrt.store._ledger import _ConnectionLedger
from ringrt.store._table import _BadRequest, _Table

pytestmark = pytest.mark.timeout(30)


def _replies(table: _Table) -> list[tuple[bytes, tuple]]:
    outbox, table.outbox = table.outbox, []
    return [(identity, proto.decode(frame)) for identity, frame in outbox]


# --- table ---


def test_parked_get_is_answered_when_the_key_is_set():
    table = _Table()
    table.park(b"A", 1, ["k"], "k", timeout=5, now=0)
    assert _replies(table) == [] and table.waiters == 1
    table.put("k", b"v")
    assert _replies(table) == [(b"A", (1, proto.OK, b"v"))]
    assert table.waiters == 0


def test_parked_wait_needs_every_key():
    table = _Table()
    table.park(b"A", 1, ["a", "b"], None, timeout=5, now=0)
    table.put("a", b"1")
    assert _replies(table) == []
    table.add("b", 1)
    assert _replies(table) == [(b"A", (1, proto.OK, None))]


def test_existing_keys_answer_at_once_and_zero_timeout_never_parks():
    table = _Table()
    table.put("k", b"v")
    table.park(b"A", 1, ["k"], "k", timeout=0, now=0)
    table.park(b"A", 2, ["missing"], "missing", timeout=0, now=0)
    assert _replies(table) == [(b"A", (1, proto.OK, b"v")), (b"A", (2, proto.TIMEOUT, ["missing"]))]
    assert table.waiters == 0


def test_expiry_answers_timeout_with_the_missing_keys_and_forgets_the_waiter():
    table = _Table()
    table.park(b"A", 1, ["a", "b"], None, timeout=2, now=10)
    table.put("a", b"1")
    table.expire(now=11.9)
    assert _replies(table) == []
    assert table.next_expiry() == 12
    table.expire(now=12)
    assert _replies(table) == [(b"A", (1, proto.TIMEOUT, ["b"]))]
    table.put("b", b"late")   # nobody is told twice
    assert _replies(table) == [] and table.waiters == 0
    assert table._waiting == {}


def test_waiters_are_capped():
    table = _Table(max_waiters=2)
    table.park(b"A", 1, ["k"], "k", timeout=5, now=0)
    table.park(b"A", 2, ["k"], "k", timeout=5, now=0)
    with pytest.raises(_BadRequest, match="waiting requests"):
        table.park(b"A", 3, ["k"], "k", timeout=5, now=0)


def test_answered_waiters_are_compacted_out_of_the_expiry_heap():
    table = _Table()
    for request_id in range(5000):
        table.park(b"A", request_id, ["k"], "k", timeout=100, now=0)
        table.put("k", b"v")
        del table.values["k"]
    table.next_expiry()
    assert len(table._expiry) <= 1024


@pytest.mark.parametrize(
    "stored, expected, desired, returned, after",
    [
        (None, b"", b"new", b"new", b"new"),      # missing, empty expected: created
        (None, b"old", b"new", b"old", None),     # missing, other expected: torch returns it
        (b"old", b"old", b"new", b"new", b"new"),  # match: replaced
        (b"cur", b"old", b"new", b"cur", b"cur"),  # mismatch: unchanged
    ],
)
def test_compare_set_follows_torch(stored, expected, desired, returned, after):
    table = _Table()
    if stored is not None:
        table.put("k", stored)
    assert table.compare_set("k", expected, desired) == returned
    assert table.values.get("k") == after


@pytest.mark.parametrize("value", [b"abc", b"1.5", b" 1", b"", b"0x10"])
def test_add_refuses_values_that_are_not_decimal_integers(value):
    table = _Table()
    table.put("k", value)
    with pytest.raises(_BadRequest, match="not an integer"):
        table.add("k", 1)


# --- connection ledger ---


def _ledger(*events) -> _ConnectionLedger:
    ledger = _ConnectionLedger()
    for event in events:
        if event[0] == "frame":
            ledger.on_frame(event[1])
        else:
            ledger.on_event(*event)
    return ledger


ACCEPTED, OK, FAILED, CLOSED = (zmq.EVENT_ACCEPTED, zmq.EVENT_HANDSHAKE_SUCCEEDED,
                                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_DISCONNECTED)


@pytest.mark.parametrize(
    "events, failures, incomplete",
    [
        ([(ACCEPTED, 5), (OK, 0), ("frame", 5), (CLOSED, 5)], 0, 0),
        ([("frame", 5), (ACCEPTED, 5), (OK, 0), (CLOSED, 5)], 0, 0),    # frame read first
        ([(ACCEPTED, 5), (CLOSED, 5)], 1, 0),                          # silent handshake failure
        ([(ACCEPTED, 5), (FAILED, 1), (CLOSED, 5)], 1, 0),             # reported once
        ([(ACCEPTED, 5), (OK, 0), (CLOSED, 5)], 0, 1),                 # cut before a frame
        ([(ACCEPTED, 5), (ACCEPTED, 6), (OK, 0), ("frame", 6), (OK, 0), (CLOSED, 5),
          (CLOSED, 6)], 0, 1),
        ([(ACCEPTED, 5), (CLOSED, 5), (ACCEPTED, 5), (OK, 0), ("frame", 5), (CLOSED, 5)], 1, 0),
    ],
)
def test_ledger_classifies_each_closed_connection(events, failures, incomplete):
    ledger = _ledger(*events)
    assert (ledger.handshake_failures, ledger.incomplete, ledger.open) == (failures, incomplete, 0)


# --- wire ---


def test_requests_round_trip():
    frame = proto.encode(7, "set", ["k", b"\x00v"])
    assert proto.decode(frame) == (7, "set", ["k", b"\x00v"])


def test_random_bytes_only_ever_raise_malformed_frame():
    rng = random.Random(0)
    for _ in range(3000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        try:
            request_id, op, _ = proto.decode(data)
        except proto.MalformedFrame:
            continue
        assert type(request_id) is int and type(op) is str


def test_map_keys_must_be_strings():
    with pytest.raises(proto.MalformedFrame):
        proto.decode(msgpack.packb([1, "set", {1: 2}]))


@pytest.mark.parametrize(
    "op, args, fits",
    [
        ("set", ["k", b"v"], True),
        ("set", ["k", "v"], False),          # values are bytes on the wire
        ("get", ["k", 1], True),
        ("get", ["k", -1.0], False),
        ("get", ["k", float("inf")], False),
        ("get", ["k", True], False),
        ("add", ["k", 2**63], False),
        ("wait", [["a", "b"], 0.5], True),
        ("wait", [["a", 1], 0.5], False),
        ("num_keys", [], True),
        ("num_keys", None, False),
        ("hello", [b"x" * proto.NONCE_BYTES, 1], True),
        ("nope", [], False),
    ],
)
def test_args_fit(op, args, fits):
    assert proto.args_fit(op, args) is fits


def test_proofs_are_bound_to_role_token_and_nonces():
    a, b = b"a" * proto.NONCE_BYTES, b"b" * proto.NONCE_BYTES
    server = proto.server_proof("t", a, b)
    assert server != proto.client_proof("t", a, b)          # no reflection
    assert server != proto.server_proof("u", a, b)
    assert server != proto.server_proof("t", b, a)
    assert proto.proofs_match(server, proto.server_proof("t", a, b))
    assert not proto.proofs_match(server, "not bytes")
