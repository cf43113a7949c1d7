"""torch's DDP communication hooks on CPU over "ringrt" (or gloo).

torch's PowerSGD hook works on CPU as it is::

    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
    state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1)
    ddp_model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)

torch's ``bf16_compress_hook`` does too, but ``DistributedDataParallel.register_comm_hook``
refuses any hook *named* ``bf16_compress_hook`` unless CUDA with NCCL >= 2.10 is present
(torch 2.13, ``_check_comm_hook``). :func:`bf16_hook` is torch's hook under another name::

    from ringrt.torch.comm_hooks import bf16_hook
    ddp_model.register_comm_hook(None, bf16_hook)     # None: the default group
"""

# no `from __future__ import annotations`: DDP checks the hook's annotations as objects
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks


def bf16_hook(process_group: "dist.ProcessGroup | None",
              bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """torch's ``bf16_compress_hook`` (each bucket divided by the group size, all-reduced as
    bfloat16, copied back), registrable on CPU.

    Args:
        process_group: the group to average over (None: the default group).
        bucket: DDP's gradient bucket.

    Returns:
        The future of the averaged bucket, as torch's hook returns it.
    """
    return default_hooks.bf16_compress_hook(process_group, bucket)
