"""What every benchmark shares (nothing here is run on its own).

::

    _machine.py    what a record ran on: cores and measured memory-copy bandwidth
    _noise.py      how often the machine interrupts a busy core (the floor under a tail)
    _table.py      pure math and text: sizes, bus factors, medians and tails, the tables
    _measure.py    one (op, size): every system warms up, then timed turns, then a check
    _backends.py   ringrt, torch gloo and mpi4py behind one small interface; launcher detection
    _progress.py   the progress bar (click) on rank 0
    _paths.py      where the repository, the current records and the archive are
"""
