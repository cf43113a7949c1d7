"""Benchmarks: collective latency/bandwidth (``collectives``, against gloo and Open MPI),
tail latency and shared-memory wait counters of back-to-back ops (``stalls``) and
training-step throughput with its breakdown (``train_step``, torch DDP on gloo alongside
through ``_torch_ddp``). Separate from the tests; see each module's
docstring for how to run it, and ``make bench``.

Layout of the collective benchmark::

    _table.py       pure math and text: sizes, bus factors, medians and tails, the table
    _backends.py    ringrt, torch gloo and mpi4py behind one small interface; launcher detection
    _measure.py     one (op, size): every system warms up, then timed turns, then a check
    _progress.py    the progress bar (click) on rank 0
    collectives.py  the sweep CLI (ringrun or mpirun)
    targets.py      issue 5's all_reduce target points, PASS/FAIL
    compare.py      driver: mpirun x {shm, tcp} x worlds, merged JSON, table, plot
    plot.py         busbw and time vs size, one line per system
"""
