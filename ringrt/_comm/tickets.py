"""Tickets: how far a rank has got in the shared-memory ops, as one uint32 futex word.

A ticket encodes step ``step`` (1..``MAX_STEPS``) of op ``seq`` as ``seq << STEP_BITS | step``,
modulo 2**32, so tickets only grow (compared modulo 2**32 by :func:`reached`) and an op that
was abandoned midway cannot confuse the next one. A ticket keeps the low 32 - ``STEP_BITS``
bits of ``seq``: :func:`in_op` compares only those. This module is the encoding's one home:
``shm.ShmOp`` signals and waits for tickets, ``ShmArena.wait`` tests them.
"""

from __future__ import annotations

STEP_BITS = 10
MAX_STEPS = (1 << STEP_BITS) - 1          # steps one op may take (1023)
_WORD = 0xFFFFFFFF                        # a ticket is a uint32 (a futex word)
_SEQ_BITS = _WORD >> STEP_BITS            # the part of seq a ticket keeps
_HALF_WORD = 0x80000000


def encode_ticket(seq: int, step: int) -> int:
    """The ticket of step ``step`` (1..MAX_STEPS; 0: before the op's first) of op ``seq``."""
    return ((seq << STEP_BITS) + step) & _WORD


def decode_ticket(ticket: int) -> tuple[int, int]:
    """``(seq, step)`` of ``ticket``, ``seq`` modulo 2**(32 - STEP_BITS)."""
    return ticket >> STEP_BITS, ticket & MAX_STEPS


def in_op(ticket: int, seq: int) -> bool:
    """Whether ``ticket`` is a step of op ``seq`` (compared in the bits a ticket keeps)."""
    return ticket >> STEP_BITS == seq & _SEQ_BITS


def next_op(ticket: int) -> int:
    """The ticket before the first step of the op after ``ticket``'s."""
    return encode_ticket(decode_ticket(ticket)[0] + 1, 0)


def reached(ticket: int, target: int) -> bool:
    """Whether ``ticket`` is at or past ``target`` (modulo 2**32)."""
    return ((ticket - target) & _WORD) < _HALF_WORD
