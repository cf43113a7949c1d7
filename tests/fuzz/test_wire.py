"""Fuzz the data-plane decoders: the 40-byte wire header, the mailbox that files whatever a
peer sends (data, point-to-point, mismatch notices), and a payload viewed as an array.

Whatever arrives, the receiver may only drop it (counted), file it, or raise ringrt's own
errors (``ProtocolError`` / ``CollectiveMismatchError``); never a raw ``ValueError`` from
struct, msgpack or NumPy, which would end the op with a message that names nobody.
"""

from __future__ import annotations

import types

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringrt._comm import wire
from ringrt._comm.exchange import Exchange, Mailbox
from ringrt.errors import CollectiveMismatchError, ProtocolError
from tests.fuzz._tried import tried

u8 = st.integers(0, 255)
header_fields = st.tuples(
    st.sampled_from([0, wire.DATA, wire.P2P, 3, wire.MISMATCH]) | u8,   # kind
    u8, u8, u8, u8,                                                     # op dtype redop flags
    st.integers(0, 2**32 - 1), st.integers(-2**31, 2**31 - 1),          # group src
    st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1),     # seq count
    st.integers(-2**31, 2**31 - 1), st.integers(-2**31, 2**31 - 1))     # root index


def _frame(data: bytes):
    return types.SimpleNamespace(buffer=memoryview(data))


@given(st.binary(max_size=128))
def test_any_bytes_decode_to_a_header_or_bad_frame(data):
    tried("wire header")
    try:
        header = wire.unpack(data)
    except ProtocolError:
        return
    assert len(data) >= wire.HEADER_BYTES
    assert isinstance(header.op_name, str)
    assert isinstance(wire.describe_signature(header.signature()), str)


@given(header_fields, st.binary(max_size=64))
def test_every_well_formed_header_can_be_described(fields, tail):
    """A peer's header reaches mismatch messages: unknown op, dtype or redop codes are shown
    as numbers (a redop this version lacks used to raise ValueError from ReduceOp)."""
    tried("wire header")
    header = wire.unpack(wire.pack(*fields) + tail)
    assert header.signature() == (fields[1], fields[2], fields[8], fields[9], fields[3])
    assert isinstance(wire.describe_signature(header.signature()), str)


notice_payloads = st.one_of(
    st.binary(max_size=64),
    st.builds(msgpack.packb, st.recursive(
        st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                    max_size=4),
        max_leaves=12)),
    st.builds(lambda d, r: msgpack.packb([d, r]), st.text(max_size=16),
              st.lists(st.integers(-2**40, 2**40), max_size=4)),
)


@given(header_fields, notice_payloads, st.booleans())
def test_mailbox_files_or_drops_anything_a_peer_sends(fields, body, finished_before):
    """Filing never raises, and a mismatch notice it keeps has the shape raising it needs."""
    tried("mailbox (data, p2p, notices)")
    mailbox = Mailbox(transport=None, rank=0)
    header = wire.pack(*fields)
    if finished_before:
        mailbox.finished(fields[5], 10, clean=True)
    filed = mailbox._file(_frame(header + body), None)
    if filed is not None:
        mailbox.stash(*filed)
    mailbox.finished(fields[5], 2**62, clean=True)      # leftovers become poison, described
    for _kind, origin, (detail, ranks) in [*mailbox._notices.values(),
                                           *mailbox.poison.values()]:
        assert isinstance(origin, int) and isinstance(detail, str)
        assert all(type(r) is int for r in ranks)


class _FakeGroup:
    members = [0, 1, 2]


def _exchange():
    """An Exchange with just what as_array reads; mismatch raises as the real one does."""
    ex = Exchange.__new__(Exchange)
    ex.group = _FakeGroup()
    ex.comm = types.SimpleNamespace(rank=0)
    ex.spec = types.SimpleNamespace(name="all_reduce")

    def mismatch(ranks, _signature, detail):
        raise CollectiveMismatchError("all_reduce", 0, ranks, 0, detail)

    ex.mismatch = mismatch
    return ex


@given(st.binary(max_size=96), st.sampled_from(["f4", "f8", "i2", "c16", "u1", "?"]),
       st.integers(0, 24))
def test_a_payload_of_the_wrong_size_is_a_mismatch(payload, dtype, count):
    tried("payload as array")
    try:
        array = _exchange().as_array(memoryview(payload), np.dtype(dtype), count, 1)
    except CollectiveMismatchError as exc:
        assert exc.ranks == [1] and "expected" in str(exc)
        return
    assert array.size == count and array.nbytes == len(payload)


def test_a_ragged_payload_names_the_sender():
    """7 bytes for float32: np.frombuffer raised a bare ValueError here before."""
    with pytest.raises(CollectiveMismatchError, match="rank 1 sent 7 bytes"):
        _exchange().as_array(memoryview(b"\0" * 7), np.dtype("f4"), 2, 1)
