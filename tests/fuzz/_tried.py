"""Counts the inputs each parser was fed, for the reliability figures (docs/reliability.md).

Every fuzz test calls :func:`tried` once per input it hands a parser; the session's conftest
writes the totals to ``$RINGRT_FUZZ_COUNTS`` (``make fuzz`` does) when the run ends.
"""

from __future__ import annotations

import collections

TRIED: collections.Counter = collections.Counter()


def tried(parser: str, n: int = 1) -> None:
    """Count ``n`` inputs handed to ``parser`` (a row of the reliability table)."""
    TRIED[parser] += n
