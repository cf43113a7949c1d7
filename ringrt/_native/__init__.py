"""ringrt's optional compiled parts (built at install time where a C compiler is found).

:data:`fastpath` is the small all_reduce's C module (``_fastpath.c``), or None when it was
not built or ``RINGRT_NO_NATIVE=1``: ringrt then runs the same steps in Python, with the same
results (both are tested: ``tests/dist/test_small_all_reduce.py``).
"""

from __future__ import annotations

from ringrt._settings import read_setting

fastpath = None
if not read_setting("RINGRT_NO_NATIVE"):
    try:
        from ringrt._native import _fastpath as fastpath  # type: ignore[no-redef]
    except ImportError:          # not built here (no compiler at install time)
        fastpath = None
