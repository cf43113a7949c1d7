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
    """(filename, line, function) of the innermost caller outside ringrt.

    The walk starts ``depth`` frames up (0: this function's own frame): the caller knows
    that the frames below are ringrt's, so they need not become objects one by one (see the
    module docstring). That is checked on the frame just below: if it is not ringrt's (a
    call chain got shorter than its caller's depth says), the walk starts at this function's
    caller instead. A depth that is wrong costs time, never a wrong line.
    """
    if depth > 1:
        try:
            below = sys._getframe(depth - 1)
        except ValueError:
            below = None
        if below is None or not below.f_code.co_filename.startswith(_skipped):
            return site_of(sys._getframe(1))
        return site_of(below.f_back)
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
