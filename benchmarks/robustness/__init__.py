"""Long runs that look for hangs, leaks and wrong answers rather than speed.

::

    chaos.py           elastic training on netlab under a seeded schedule of faults (``make chaos``)
    _chaos_round.py    one round: the job on every host, the faults, the invariants
    _chaos_faults.py   the fault kinds and how each is undone
    soak_load.py       many ops of each kind, watching memory, fds and threads (``make soak-load``)
"""
