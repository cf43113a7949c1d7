"""ringrt as a ``torch.distributed`` backend: unmodified PyTorch code over ringrt.

::

    import torch.distributed as dist
    import ringrt.torch                     # registers the "ringrt" backend (optional: the
                                            # torch.backends entry point, _ringrt_autoload,
                                            # registers it lazily on `import torch`)
    dist.init_process_group("ringrt")       # under ringrun (env://), torchrun, or tcp://

Every collective, point-to-point op and object collective on CPU tensors then runs over
ringrt -- shared memory on one host, ZeroMQ across hosts, the tensors' own memory (no
copies) -- with ringrt's errors (``ringrt.errors.PeerLostError``,
``CollectiveMismatchError``, ``TimeoutError``) coming out of the torch call, ``work.wait()``
or ``loss.backward()``. DDP, ZeroRedundancyOptimizer and FSDP work unchanged.

Importing this module also makes ``env://`` rendezvous through ringrt's authenticated store
when ``ringrun`` hosts it (``_rendezvous``) and routes ``dist.monitored_barrier`` on ringrt
groups to ringrt (``_monitored``); ``import ringrt`` alone never imports torch.

Layout (each module imports only those above it)::

    _tensors.py     tensors as NumPy views (zero-copy), dtypes (bfloat16 too), layouts
    _checks.py      argument checks of the torch ops, before the first byte
    _work.py        torch Work and Future over ringrt's async ops; errors into them
    _stores.py      torch Store <-> ringrt Store adapters, both ways
    _backend.py     ProcessGroupRingrt: every torch op mapped to a ringrt collective
    _rendezvous.py  env:// under ringrun through ringrt's store
    _creator.py     the creator torch calls: one ringrt world per process, subgroups on it
    _monitored.py   dist.monitored_barrier on ringrt groups (torch lets only gloo have it)
    comm_hooks.py   torch's DDP comm hooks on CPU (bf16_hook: torch's bf16 hook, registrable)
    localsgd.py     DiLoCo across hosts (DDP inside a host), over any torch optimizer
    elastic.py      membership_changed for elastic ringrun jobs, over torch's groups

Training across slow links (docs/training-across-laptops.md)::

    from ringrt.torch import DiLoCo
    diloco = DiLoCo(model, torch.optim.AdamW(model.parameters()), sync_every=50,
                    two_level=True)
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from ringrt._observe import site
from ringrt.torch import _creator, _monitored, _rendezvous
from ringrt.torch._backend import BACKEND_NAME, ProcessGroupRingrt
from ringrt.torch.comm_hooks import bf16_hook
from ringrt.torch.elastic import membership_changed
from ringrt.torch.localsgd import DiLoCo, HostGroups, host_groups, host_layout

__all__ = ["BACKEND_NAME", "DiLoCo", "HostGroups", "ProcessGroupRingrt", "bf16_hook",
           "host_groups", "host_layout", "membership_changed"]

# The flight recorder and timeline name the user's line, not torch's distributed_c10d.py.
site.skip_frames_under(os.path.dirname(torch.__file__))

dist.Backend.register_backend(BACKEND_NAME, _creator.create, extended_api=True,
                              devices=["cpu"])
_rendezvous.install()
_monitored.install()
