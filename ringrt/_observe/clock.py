"""Aligning ranks' clocks for the timeline: each rank's offset to rank 0's clock.

Ranks on rank 0's host share its clock (``time.perf_counter`` is CLOCK_MONOTONIC, one clock
for every process of a host): their offset is exactly 0. A rank on another host measures it
at init, as NTP does, over the job's own links: :data:`PING_ROUNDS` times it sends rank 0 a
ping at ``t0`` (its clock), rank 0 answers with its clock ``t1``, the answer arrives at ``t2``;
the round with the shortest trip gives ``offset = t1 - (t0 + t2) / 2``, whose error is at most
half that trip (the two legs' imbalance), reported with the offset. Drift over a job (crystal
clocks drift by tens of parts per million) is not corrected: for a long job across hosts, spans of
ranks on different hosts line up to within that drift, not better.

This runs as one op of the world (every rank takes part, so sequence numbers stay aligned),
only when some rank traces and the job spans hosts (or ``RINGRT_TRACE_PING=1`` asks for it
on one host, which tests use: the offset there must come out near 0).
"""

from __future__ import annotations

import struct
import time

PING_ROUNDS = 8
_STAMP = struct.Struct("<d")


def measure(ex, pinged: list[int]) -> tuple[float, float]:
    """Run on every rank of the world (``ex``: the op's exchange); ranks in ``pinged`` ping
    rank 0. Returns this rank's (offset to rank 0 in seconds, error bound in seconds)."""
    if ex.rank == 0:
        for peer in pinged:
            for _ in range(PING_ROUNDS):
                ex.recv(peer)
                ex.send(peer, _STAMP.pack(time.perf_counter()))
        return 0.0, 0.0
    if ex.rank not in pinged:
        return 0.0, 0.0
    best_trip, best_offset = float("inf"), 0.0
    for _ in range(PING_ROUNDS):
        sent = time.perf_counter()
        ex.send(0, b"ping")
        reply = bytes(ex.recv(0))
        arrived = time.perf_counter()
        if arrived - sent < best_trip:
            best_trip = arrived - sent
            best_offset = _STAMP.unpack(reply)[0] - (sent + arrived) / 2
    return best_offset, best_trip / 2
