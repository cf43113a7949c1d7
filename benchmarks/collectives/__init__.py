"""Collectives and point-to-point on ringrt's NumPy API, against gloo and Open MPI.

::

    sweep.py     the nccl-tests table of one job (ringrun or mpirun), every system interleaved
    compare.py   driver (``make bench``): mpirun x {shm, tcp} x worlds, merged JSON, table, plot
    targets.py   all_reduce target points against gloo and Open MPI, PASS/FAIL
    report.py    the docs' Markdown tables from compare's record
    plot.py      busbw and time vs size, one line per system
    stalls.py    tail latency and shared-memory wait counters of back-to-back ops
    groups.py    a subgroup of every rank against the world group (NumPy API or torch)
    p2p.py       send/recv: ping-pong and ring exchange
"""
