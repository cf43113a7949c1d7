"""ringrt: torch.distributed-style collectives, DDP and ZeRO-1 for CPU machines, over ZeroMQ.

``import ringrt as dist``, then ``dist.init_process_group()`` under ``ringrun``, ``srun`` or
``mpirun``; arrays are NumPy arrays. See README.md and ../shared/spec/API.md.

Layout (data flows down; each layer only imports the ones above it, which
``tests/unit/test_layering.py`` checks)::

    errors.py _env.py _deadline.py _dtypes.py _reduce_ops.py _curve.py
                         foundations: the DistError tree, the environment (env://, tcp://, SLURM,
                         Open MPI/PMI -> JobSpec), deadlines, bfloat16, reduction kernels,
                         token-derived keys
    _observe/            flight recorder, timeline (RINGRT_TRACE), clock offsets, dumps on
                         error / SIGUSR1: what every layer below reports to
    store/               the rendezvous key-value store: client, server, protocol, token handshake
    _comm/               this rank's communication: wire header, transport (inbox + outboxes),
                         shared memory + futex, same-host point-to-point channels, heartbeat
                         sentinel, one op's exchange, executor
    _process_group.py    ProcessGroup: members, sequence numbers, rendezvous, running an op
    _algorithms/         ring, tree (recursive doubling, binomial, chain), direct, shm; choice
                         of algorithm and the cost model behind it
    distributed.py       the default group: init/destroy, get_rank, new_group
    collectives.py       public array collectives  (p2p.py, object_collectives.py alongside;
                         argument checks in _validate.py, object encoding in _objects.py)
    ddp.py optim/ checkpoint.py _flat.py   training on top of the collectives
    localsgd.py _compress.py   DiLoCo / local SGD across slow links; bf16, int8 and PowerSGD
                         averaging (for localsgd and ddp)
    data/                DistributedSampler, DataLoader, datasets
    tuning.py debug.py   for benchmarks and tuning: the algorithm choice and its cost model;
                         hooks that measure the flight recorder and the timeline
    torch/               the "ringrt" backend of torch.distributed (``import ringrt.torch``; the
                         only part that imports torch, which ``import ringrt`` never does)
"""

from ringrt import errors
from ringrt._comm.auth import LinkSecurity
from ringrt._comm.work import Work
from ringrt._process_group import NonMember, ProcessGroup
from ringrt._reduce_ops import ReduceOp
from ringrt.collectives import (
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    all_to_all,
    all_to_all_single,
    barrier,
    broadcast,
    gather,
    reduce,
    reduce_scatter,
    reduce_scatter_tensor,
    scatter,
)
from ringrt.distributed import (
    destroy_process_group,
    get_rank,
    get_store,
    get_world_size,
    init_process_group,
    is_initialized,
    new_group,
    stats,
)
from ringrt.object_collectives import (
    all_gather_object,
    broadcast_object_list,
    gather_object,
    scatter_object_list,
)
from ringrt.p2p import irecv, isend, recv, send
from ringrt.store import Store

__version__ = "0.1.0"

__all__ = [
    "init_process_group", "is_initialized", "get_rank", "get_world_size", "new_group",
    "destroy_process_group", "get_store", "stats", "ProcessGroup", "NonMember", "LinkSecurity",
    "Store", "Work",
    "ReduceOp", "errors",
    "all_reduce", "broadcast", "reduce", "all_gather", "all_gather_into_tensor",
    "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter", "all_to_all",
    "all_to_all_single", "barrier", "send", "recv", "isend", "irecv",
    "broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
]
