"""The data-plane wire format: a fixed 40-byte header, then the payload.

Every message between ranks starts with :data:`HEADER` (little-endian)::

    magic u16 | version u8 | kind u8 | op u8 | dtype u8 | redop u8 | flags u8 |
    group u32 | src i32 | seq i64 | count i64 | root i32 | index i32

``kind`` says what the message is (collective data, point-to-point data, or a notice that a
rank found a mismatch), ``seq`` is the op's sequence number in its group (the tag for
point-to-point), ``count``/``dtype``/``root``/``redop`` describe the op as the *sender* called
it — the receiver compares them with its own call, which is how mismatched collectives are
caught without an extra round trip — and ``index`` numbers the messages one sender sends one
receiver within one op.

Small payloads travel in the same frame as the header (one copy, one zmq message); large
payloads follow as a second frame sent zero-copy. A fixed ``struct`` header (not msgpack) is
used here because it is decoded on every message of every collective: ``unpack_from`` is
several times faster than ``msgpack.unpackb`` for this shape. Others are msgpack.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ringrt._dtypes import BFLOAT16
from ringrt._dtypes import name as dtype_name
from ringrt.errors import ProtocolError

MAGIC = 0x5252          # "RR"
VERSION = 1
HEADER = struct.Struct("<HBBBBBBIiqqii")
HEADER_BYTES = HEADER.size                  # 40: keeps an inline payload 8-byte aligned

# kind (3 was a notice that a rank rejected an op's arguments: rejections are now local)
DATA, P2P, MISMATCH = 1, 2, 4

# op codes: the wire-level collective (all_gather and all_gather_into_tensor share one).
OP_NAMES = {
    1: "all_reduce", 2: "broadcast", 3: "reduce", 4: "all_gather", 5: "reduce_scatter",
    6: "gather", 7: "scatter", 8: "all_to_all", 9: "barrier", 10: "send",
    11: "broadcast_object_list", 12: "all_gather_object", 13: "gather_object",
    14: "scatter_object_list", 15: "new_group",
}
OP_CODES = {name: code for code, name in OP_NAMES.items()}

# flags
INLINE = 1              # payload follows the header inside the first frame

_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
           np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128, BFLOAT16]
DTYPE_CODES = {np.dtype(t): code for code, t in enumerate(_DTYPES, start=1)}
DTYPE_CODES[None] = 0                           # ops without an array payload (objects, barrier)
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


@dataclass(frozen=True)
class Header:
    """A decoded message header (see the module docstring for the fields)."""

    kind: int
    op: int
    dtype: int
    redop: int
    flags: int
    group: int
    src: int
    seq: int
    count: int
    root: int
    index: int

    @property
    def op_name(self) -> str:
        return OP_NAMES.get(self.op, f"op{self.op}")

    def signature(self) -> tuple:
        """What must agree across ranks for the same op: (op, dtype, count, root, redop)."""
        return (self.op, self.dtype, self.count, self.root, self.redop)


def pack(kind: int, op: int, dtype: int, redop: int, flags: int, group: int, src: int,
         seq: int, count: int, root: int, index: int) -> bytes:
    """Encode a header."""
    return HEADER.pack(MAGIC, VERSION, kind, op, dtype, redop, flags, group, src, seq, count,
                       root, index)


class BadFrame(ProtocolError):
    """A frame that is not a ringrt data-plane message (dropped and counted by the receiver)."""


def unpack(buffer) -> Header:
    """Decode a header from the start of ``buffer``.

    Raises:
        BadFrame: too short, wrong magic or version.
    """
    if len(buffer) < HEADER_BYTES:
        raise BadFrame(f"frame of {len(buffer)} bytes is shorter than a header")
    magic, version, *fields = HEADER.unpack_from(buffer)
    if magic != MAGIC or version != VERSION:
        raise BadFrame(f"bad magic/version {magic:#x}/{version}")
    return Header(*fields)


def describe_signature(signature: tuple) -> str:
    """Human text for a signature tuple, for mismatch messages."""
    op, dtype, count, root, redop = signature
    parts = [OP_NAMES.get(op, f"op{op}")]
    if CODE_DTYPES.get(dtype) is not None:
        parts.append(f"dtype={dtype_name(CODE_DTYPES[dtype])}")
    if count >= 0:
        parts.append(f"count={count}")
    if root >= 0:
        parts.append(f"root={root}")
    if redop:
        from ringrt._reduce_ops import ReduceOp

        # redop comes from a peer's header: a code this version does not know is shown as a
        # number, never raised (it would replace the mismatch error being built)
        known = redop in ReduceOp._value2member_map_
        parts.append(f"op={ReduceOp(redop).name}" if known else f"op={redop}")
    return " ".join(parts)
