"""Address cards are signed with the job token: a card swapped in the store is refused.

ringrt's own store admits only token holders, but torch's TCPStore (under torchrun) admits
anyone; a forged card there must not send a rank's data to someone else's socket.
"""

from __future__ import annotations

import msgpack
import pytest

from ringrt._comm.rendezvous import _seal_card, exchange_cards
from ringrt._deadline import Deadline
from ringrt.errors import DistError


class OpenStore:
    """A store anyone can write: set/get/wait/check on a dict (every key already there)."""

    host, port = "127.0.0.1", 0

    def __init__(self):
        self.values = {}

    def set(self, key, value):
        self.values[key] = value

    def get(self, key, timeout=None):
        return self.values[key]

    def wait(self, keys, timeout=None):
        assert all(k in self.values for k in keys)

    def check(self, keys):
        return all(k in self.values for k in keys)


def test_genuine_cards_are_read_back():
    store = OpenStore()
    store.set("job/card/1", _seal_card("token", "job/card/1", {"world_size": 2, "data": 1}))
    cards = exchange_cards(store, "job/card", 0, 2, {"data": 0}, Deadline(5), "token")
    assert cards == {0: {"world_size": 2, "data": 0}, 1: {"world_size": 2, "data": 1}}


@pytest.mark.parametrize("forge", [
    lambda: _seal_card("attacker-token", "job/card/1", {"world_size": 2, "data": "evil"}),
    lambda: _seal_card("token", "job/card/0", {"world_size": 2, "data": "moved"}),  # replayed
    lambda: msgpack.packb({"world_size": 2, "data": "unsigned"}),
    lambda: b"garbage",
], ids=["other-token", "card-of-another-key", "unsigned", "garbage"])
def test_a_card_not_signed_for_its_key_is_refused(forge):
    store = OpenStore()
    store.set("job/card/1", forge())
    with pytest.raises(DistError, match="rank 1's address card .* not signed"):
        exchange_cards(store, "job/card", 0, 2, {"data": 0}, Deadline(5), "token")
