"""Training on ringrt: step throughput, and accuracy against time and samples.

::

    train_step.py         DDP (sync, overlap) and ZeRO-1 step time and where it goes
    _torch_ddp.py         torch's DDP on gloo, measured inside train_step's job
    diloco_delay.py       what DiLoCo's one-step delay and DDP's compression cost in loss
    time_to_accuracy.py   time to a loss across netlab hosts (``make bench-across-hosts``)
    trace_picture.py      the docs' picture of a traced 4-rank DDP run
"""
