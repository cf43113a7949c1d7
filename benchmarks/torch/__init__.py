"""The torch.distributed backend "ringrt" against gloo, in the same job (``make bench-torch``).

::

    collectives.py   every torch collective on CPU tensors, interleaved size by size
    train_step.py    a torch DDP training step (the scaling baseline at world 1)
    tp_generate.py   tensor-parallel generation (TP=2) against gloo and one process
    report.py        the docs' Markdown tables from the two records above
    _ops.py          the torch ops the benchmarks time, prepared on one group
"""
