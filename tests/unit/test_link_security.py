"""Tier 2 (sockets in one process): who may deliver to a rank's tcp inbox, and what the wire
shows.

A TCP relay between two transports records every byte on the wire, so the tests can see
whether a marker payload travels in the clear; each receiver runs its own Guard (the ZAP
handler) in its own context, as a rank does.
"""

import dataclasses

import pytest

from ringrt._comm.auth import CURVE, NULL, PLAIN, LinkSecurity
from ringrt._curve import derive_keys
from tests.relay import tapped_pair
from tests.store._util import eventually

MARKER = b"PLAINTEXT-MARKER-" * 64
JOB = LinkSecurity(token="job-token", nonce=b"n" * 16)


def _send_through_relay(server: LinkSecurity, client: LinkSecurity, client_mechanism=None,
                        wait_ms: int = 3000):
    """Send MARKER from a ``client`` transport to a ``server`` one through a relay; returns
    (what arrived or None, the bytes on the wire, the receiver's guard counts, mechanism)."""
    with tapped_pair(server, client, client_mechanism) as pair:
        pair.sender.send(0, MARKER)
        message = pair.receiver.recv(wait_ms)
        received = None if message is None else bytes(message[0].buffer)
        counts = pair.guard.counts          # the Guard thread counts monitor events as they come
        eventually(lambda: counts["accepted"] and (received is None or counts["authenticated"]),
                   what="the guard to count the connection")
        return received, bytes(pair.relay.captured), dict(counts), pair.mechanism


@pytest.mark.timeout(30)
def test_loopback_default_is_plain_with_a_token_checked_password():
    received, wire, counts, mechanism = _send_through_relay(JOB, JOB)
    assert mechanism == PLAIN and received == MARKER
    assert MARKER[:32] in wire                        # authenticated, not encrypted
    assert b"job-token" not in wire                   # the token itself never crosses
    assert counts["authenticated"] == 1 and counts["zap_denied"] == 0


@pytest.mark.timeout(30)
def test_other_hosts_get_curve_by_default_and_encrypt_true_takes_it_everywhere():
    assert JOB.mechanism("10.1.2.3") == CURVE and JOB.mechanism("127.0.0.1") == PLAIN
    assert dataclasses.replace(JOB, encrypt=False).mechanism("10.1.2.3") == PLAIN
    assert dataclasses.replace(JOB, insecure=True).mechanism("10.1.2.3") == NULL
    secret = dataclasses.replace(JOB, encrypt=True)
    received, wire, counts, mechanism = _send_through_relay(secret, secret)
    assert mechanism == CURVE and received == MARKER
    assert len(wire) > len(MARKER) and b"PLAINTEXT-MARKER" not in wire
    assert counts["authenticated"] == 1


@pytest.mark.timeout(30)
def test_insecure_mode_is_the_unauthenticated_baseline():
    insecure = dataclasses.replace(JOB, insecure=True)
    received, wire, counts, mechanism = _send_through_relay(insecure, insecure)
    assert mechanism == NULL and received == MARKER and MARKER[:32] in wire


@pytest.mark.timeout(30)
@pytest.mark.parametrize("client, mechanism, refusal", [
    (dataclasses.replace(JOB, token="another-token"), None, "zap_denied"),     # another job
    (dataclasses.replace(JOB, nonce=b"o" * 16), None, "zap_denied"),           # earlier restart
    (JOB, NULL, "accepted"),                                                   # no credentials
    (JOB, CURVE, "accepted"),                                                  # wrong mechanism
], ids=["other-token", "other-nonce", "null-client", "curve-client"])
def test_a_client_without_this_rendezvous_credential_cannot_deliver(client, mechanism, refusal):
    received, _, counts, _ = _send_through_relay(JOB, client, mechanism, wait_ms=1500)
    assert received is None
    # counted: a ZAP denial, or (a mechanism mismatch closes silently) a connection that was
    # accepted and never authenticated
    assert counts[refusal] >= 1 and counts["authenticated"] == 0


@pytest.mark.timeout(30)
def test_a_curve_client_with_another_token_cannot_deliver():
    secret = dataclasses.replace(JOB, encrypt=True)
    other = dataclasses.replace(secret, token="another-token")
    received, _, counts, _ = _send_through_relay(secret, other, wait_ms=1500)
    assert received is None and counts["authenticated"] == 0
    assert counts["accepted"] >= 1


def test_keys_need_a_token():
    with pytest.raises(ValueError, match="RINGRT_TOKEN"):
        derive_keys("")
    assert derive_keys("a") == derive_keys("a") != derive_keys("b")


def test_plain_password_binds_the_token_and_the_nonce():
    other_nonce = dataclasses.replace(JOB, nonce=b"x" * 16)
    assert JOB.password() != other_nonce.password() != \
        dataclasses.replace(JOB, token="t2").password()
    assert JOB.admits(b"PLAIN", [b"ringrt", JOB.password()])
    assert not JOB.admits(b"PLAIN", [b"ringrt", other_nonce.password()])
    assert not JOB.admits(b"NULL", [])
