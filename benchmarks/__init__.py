"""Benchmarks, separate from the tests, grouped by what they measure. Each module's docstring
says how to run it (``python -m benchmarks.GROUP.NAME``, most under ``ringrun``); the Makefile's
``bench*``, ``soak-load``, ``chaos`` and ``bench-across-hosts`` targets run the usual ones.
``benchmarks/README.md`` gives the layout and where the records go.

::

    common/       what every benchmark shares: the machine line, tables, one measured point
    collectives/  collectives and point-to-point on the NumPy API, against gloo and Open MPI
    torch/        the torch backend "ringrt" against gloo
    training/     training steps, and accuracy against time and samples
    cluster/      collectives across netlab hosts, and the cost model fitted to them
    overhead/     what a feature or mode costs: link security, tracing, autoload, binding
    robustness/   chaos and load soaks: hangs, leaks and wrong answers, not speed
    results/      the current record of each benchmark; results/archive/ the earlier runs

Only ringrt's public API is used here (``tests/unit/test_benchmark_api.py``), so
ringrt's internals can change without breaking a benchmark. A module whose name starts with
``_`` is a helper of its group, never started by hand.
"""
