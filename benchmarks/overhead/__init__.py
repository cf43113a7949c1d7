"""What a feature or a mode costs (or buys) against the same job without it.

::

    security_cost.py         tcp links with no authentication, PLAIN and CurveZMQ
    trace_overhead.py        the flight recorder and the timeline, per op
    torch_autoload_cost.py   ringrt's torch.backends entry point on every ``import torch``
    binding.py               ``ringrun --bind`` modes against none
    portable.py              the portable shared-memory path (shm_open, no futex) against Linux's
"""
