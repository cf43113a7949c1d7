"""Where the user called an op: the first frame outside ringrt, as (file, line, function).

Only plain values are kept, never frame objects (a frame keeps every local of the call alive).
Each frame the walk looks at becomes a Python frame object (CPython 3.11 creates them on
demand; ``sys._getframe(depth)`` does so only for the frame it returns), so callers start the
walk above the frames they know are ringrt's: for a collective that is the user's frame
(already an object while it loops over ops), one ringrt frame more from DDP or the torch
backend.
"""

from __future__ import annotations

import os
import sys

UNKNOWN = ("?", 0, "?")

_skipped: tuple[str, ...] = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)


def skip_frames_under(directory: str) -> None:
    """Also look past frames of files under ``directory`` (``ringrt.torch`` adds torch's
    package, so that a torch call site is the user's line, not ``distributed_c10d.py``)."""
    global _skipped
    prefix = os.path.abspath(directory) + os.sep
    if prefix not in _skipped:
        _skipped = (*_skipped, prefix)


def call_site(depth: int = 2) -> tuple[str, int, str]:
    """(filename, line, function) of the innermost caller outside ringrt, starting ``depth``
    frames above this function's caller."""
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return UNKNOWN
    return site_of(frame)


def site_of(frame) -> tuple[str, int, str]:
    """(filename, line, function) of ``frame`` or the first frame above it outside ringrt."""
    skipped = _skipped
    while frame is not None and frame.f_code.co_filename.startswith(skipped):
        frame = frame.f_back
    if frame is None:
        return UNKNOWN
    code = frame.f_code
    return (code.co_filename, frame.f_lineno, code.co_name)


def short(site) -> str:
    """``train.py:88`` (the file's base name and the line)."""
    return f"{os.path.basename(site[0])}:{site[1]}"
