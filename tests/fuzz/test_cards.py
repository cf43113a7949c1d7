"""Fuzz what ranks read about each other at rendezvous: address cards from the store (signed
with the job token, so a forged one must be refused, and a signed one with other fields must
be a ``ProtocolError``, not a ``KeyError`` deep in the transport) and the ZAP credentials a
connecting peer presents to a rank's tcp sockets."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringrt._comm import rendezvous
from ringrt._comm.auth import LinkSecurity
from ringrt._deadline import Deadline
from ringrt.errors import DistError, ProtocolError
from tests.fuzz._tried import tried

TOKEN = "card-token"
KEY = "job/card/1"
leaves = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
          | st.text(max_size=8) | st.binary(max_size=16))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(-3, 3), inner,
                                        max_size=4), max_leaves=12)


def _signed(body: bytes, key: str = KEY) -> bytes:
    return msgpack.packb([body, rendezvous._signature(TOKEN, key, body)])


@given(st.binary(max_size=96) | st.builds(msgpack.packb, values))
def test_an_unsigned_card_is_refused_with_a_dist_error(raw):
    tried("address card (signature)")
    with pytest.raises(DistError):
        rendezvous._open_card(TOKEN, KEY, raw, 0, 1)


@given(st.binary(max_size=64) | st.builds(msgpack.packb, values))
def test_a_signed_card_is_a_map_or_a_protocol_error(body):
    tried("address card (body)")
    try:
        card = rendezvous._open_card(TOKEN, KEY, _signed(body), 0, 1)
    except ProtocolError as exc:
        assert "rank 1's address card" in str(exc)
        return
    assert isinstance(card, dict)


class _Store:
    """Just what exchange_cards asks of a store, over a dict (every key already there)."""

    host, port = "127.0.0.1", 0

    def __init__(self):
        self.values = {}

    def set(self, key, value):
        self.values[key] = value

    def wait(self, keys, timeout=None):
        assert all(k in self.values for k in keys)

    def get(self, key, timeout=None):
        return self.values[key]

    def check(self, keys):
        return all(k in self.values for k in keys)


OUR_CARD = {"data": {"host": "h0", "ipc": "ipc:///tmp/x"}, "heart": {"ipc": "ipc:///tmp/y"},
            "shm": None, "trace": 0}
peer_cards = st.fixed_dictionaries(
    {}, optional={"world_size": st.integers(0, 3) | leaves,
                  "data": st.fixed_dictionaries({}, optional={"host": st.text(max_size=4) | leaves,
                                                              "ipc": st.text(max_size=4)}) | leaves,
                  "heart": st.dictionaries(st.text(max_size=3), leaves, max_size=2) | leaves,
                  "shm": st.none() | st.dictionaries(st.text(max_size=3), leaves, max_size=2)
                  | leaves,
                  "trace": st.integers(0, 2) | leaves})


@given(peer_cards)
def test_exchange_cards_returns_cards_with_our_fields_or_raises_named_errors(theirs):
    tried("address card (fields)")
    store = _Store()
    store.set("job/card/1", _signed(msgpack.packb(theirs), "job/card/1"))
    try:
        cards = rendezvous.exchange_cards(store, "job/card", 0, 2, OUR_CARD, Deadline(5), TOKEN)
    except ProtocolError:
        return
    except ValueError as exc:              # another WORLD_SIZE: the documented error
        assert "WORLD_SIZE" in str(exc)
        return
    peer = cards[1]
    assert isinstance(peer["data"], dict) and isinstance(peer["data"]["host"], str)
    assert all(isinstance(peer[k], dict) for k in ("data", "heart"))


def test_a_signed_card_whose_data_is_none_is_a_protocol_error():
    """Found by the long run (make fuzz): None passed for every map, data included."""
    store = _Store()
    theirs = {"world_size": 2, "shm": None, "trace": 0, "heart": {}, "data": None}
    store.set("job/card/1", _signed(msgpack.packb(theirs), "job/card/1"))
    with pytest.raises(ProtocolError, match="field 'data'"):
        rendezvous.exchange_cards(store, "job/card", 0, 2, OUR_CARD, Deadline(5), TOKEN)


def test_a_signed_card_without_its_data_is_a_protocol_error():
    """It was a KeyError from c["data"] in share_memory."""
    store = _Store()
    store.set("job/card/1", _signed(msgpack.packb({"world_size": 2}), "job/card/1"))
    with pytest.raises(ProtocolError, match="field 'data' is missing"):
        rendezvous.exchange_cards(store, "job/card", 0, 2, OUR_CARD, Deadline(5), TOKEN)


@given(st.binary(max_size=12), st.lists(st.binary(max_size=80), max_size=4))
def test_zap_credentials_are_admitted_only_with_the_token(mechanism, credentials):
    tried("zap credentials")
    security = LinkSecurity(token=TOKEN, nonce=b"n" * 16)
    assert security.admits(mechanism, credentials) is False
