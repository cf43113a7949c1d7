"""The systems under test behind one interface, and how to start them under each launcher.

A system has a ``name``, ``barrier()``, ``prepare(op, out, inp) -> run`` (a no-argument
callable doing one collective on pre-wrapped buffers, so the timed loop pays only for the
collective) and ``close()``. Buffers are NumPy arrays: ``out`` is the all_reduce/broadcast
buffer (in place), the reduce_scatter output, the all_gather output; ``inp`` the
reduce_scatter/all_gather input (None otherwise). Broadcast's root is rank 0.

- ``ringrt`` — always; it is also the control plane (agreeing on iteration counts, taking the
  max of per-rank times) outside every timed loop.
- ``gloo`` — ``torch.distributed`` with the gloo backend (optional: ``pip install -e
  .[compare]``); its rendezvous is its own TCPStore, bound to port 0 by rank 0 (no
  probe-then-bind race) and shared through ringrt.
- ``mpi-shm`` / ``mpi-tcp`` — mpi4py over Open MPI, only when the job was started by mpirun
  (under ringrun MPI_Init would make a singleton); named after the BTLs mpirun was given.
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import secrets
import subprocess
import sys

import numpy as np

import ringrt as dist
from benchmarks.common import _machine

MPI_HINT = ("mpirun --oversubscribe -n N python -m benchmarks.collectives.sweep --compare "
            "gloo,mpi (add --mca btl tcp,self for MPI over TCP; python -m "
            "benchmarks.collectives.compare runs both)")
LOAD_AT_START = os.getloadavg()
COMPARE_HINT = "pip install -e '.[compare]' (torch==2.13.0 CPU, mpi4py, matplotlib)"


def launcher(env=None) -> str:
    """Who started this process: 'ringrun', 'mpirun', 'srun' or 'none'."""
    env = os.environ if env is None else env
    if "RINGRT_RESTART_COUNT" in env:           # set by ringrun only (ringrt_launcher/env.py)
        return "ringrun"
    if "OMPI_COMM_WORLD_SIZE" in env or "PMIX_RANK" in env or "PMI_SIZE" in env:
        return "mpirun"
    if "SLURM_PROCID" in env:
        return "srun"
    return "none"


def mpi_label(env=None) -> str:
    """'mpi-tcp' when mpirun was told to use only TCP between ranks, else 'mpi-shm'."""
    env = os.environ if env is None else env
    btls = {b.strip() for b in env.get("OMPI_MCA_btl", "").split(",") if b.strip()}
    return "mpi-tcp" if "tcp" in btls and not btls & {"vader", "sm"} else "mpi-shm"


class Ringrt:
    """ringrt's default group (``init_process_group`` must have run)."""

    name = "ringrt"

    def barrier(self) -> None:
        dist.barrier()

    def shm_stats(self) -> dict | None:
        """The shared-memory wait counters of ``ringrt.stats()``."""
        return dist.stats().get("shm")

    def prepare(self, op: str, out: np.ndarray, inp: np.ndarray | None):
        if op == "all_reduce":
            return functools.partial(dist.all_reduce, out)
        if op == "broadcast":
            return functools.partial(dist.broadcast, out, 0)
        if op == "reduce_scatter":
            return functools.partial(dist.reduce_scatter_tensor, out, inp)
        return functools.partial(dist.all_gather_into_tensor, out, inp)

    def close(self) -> None:
        dist.destroy_process_group()


class Gloo:
    """torch.distributed over gloo, in its own default group beside ringrt's."""

    name = "gloo"

    def __init__(self, rank: int, world: int, master_addr: str, timeout_s: float = 300.0):
        import torch
        import torch.distributed as td

        torch.set_num_threads(1)
        self.td = td
        timeout = datetime.timedelta(seconds=timeout_s)
        port = np.zeros(1, dtype=np.int64)
        store = None
        if rank == 0:
            store = td.TCPStore(master_addr, 0, world, is_master=True, timeout=timeout,
                                wait_for_workers=False)
            port[0] = store.port
        dist.broadcast(port, 0)
        if rank != 0:
            store = td.TCPStore(master_addr, int(port[0]), world, is_master=False,
                                timeout=timeout)
        td.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
        self._torch = torch
        # torch 2.13 renamed the *_tensor collectives *_single (the old names warn).
        self._reduce_scatter = getattr(td, "reduce_scatter_single", None) or \
            td.reduce_scatter_tensor
        self._all_gather = getattr(td, "all_gather_single", None) or td.all_gather_into_tensor

    def barrier(self) -> None:
        self.td.barrier()

    def prepare(self, op: str, out: np.ndarray, inp: np.ndarray | None):
        t_out = self._torch.from_numpy(out)
        t_inp = None if inp is None else self._torch.from_numpy(inp)
        if op == "all_reduce":
            return functools.partial(self.td.all_reduce, t_out)
        if op == "broadcast":
            return functools.partial(self.td.broadcast, t_out, 0)
        if op == "reduce_scatter":
            return functools.partial(self._reduce_scatter, t_out, t_inp)
        return functools.partial(self._all_gather, t_out, t_inp)

    def close(self) -> None:
        self.td.destroy_process_group()


class TorchRingrt:
    """torch.distributed over the "ringrt" backend: a ``new_group(backend="ringrt")`` of every
    rank beside gloo's default group (a ringrt world of its own, as the backend makes for a
    group under another default backend), timed through torch's Python API as gloo is."""

    name = "torch-ringrt"

    def __init__(self, gloo: Gloo):
        import ringrt.torch  # noqa: F401  (registers the backend)

        self.td = gloo.td
        self._torch = gloo._torch
        self.group = self.td.new_group(backend="ringrt")
        self._reduce_scatter, self._all_gather = gloo._reduce_scatter, gloo._all_gather

    def barrier(self) -> None:
        self.td.barrier(group=self.group)

    def shm_stats(self) -> dict | None:
        """The shared-memory wait counters of the backend's own ringrt world."""
        return ringrt_backend_of(self.group).ringrt_group.stats().get("shm")

    def prepare(self, op: str, out: np.ndarray, inp: np.ndarray | None):
        t_out = self._torch.from_numpy(out)
        t_inp = None if inp is None else self._torch.from_numpy(inp)
        group = self.group
        if op == "all_reduce":
            return functools.partial(self.td.all_reduce, t_out, group=group)
        if op == "broadcast":
            return functools.partial(self.td.broadcast, t_out, 0, group=group)
        if op == "reduce_scatter":
            return functools.partial(self._reduce_scatter, t_out, t_inp, group=group)
        return functools.partial(self._all_gather, t_out, t_inp, group=group)

    def close(self) -> None:
        self.td.destroy_process_group(self.group)


def ringrt_backend_of(group):
    """The "ringrt" backend object (``ringrt.torch.ProcessGroupRingrt``) of a torch process
    group: the group itself where torch hands it back directly, else its CPU backend."""
    import torch

    if hasattr(group, "ringrt_group"):
        return group
    return group._get_backend(torch.device("cpu"))


class Mpi:
    """mpi4py's COMM_WORLD (MPI_Init happened at ``import mpi4py.MPI``, before ringrt)."""

    def __init__(self, mpi_module, name: str):
        self.MPI = mpi_module
        self.comm = mpi_module.COMM_WORLD
        self.name = name

    def barrier(self) -> None:
        self.comm.Barrier()

    def prepare(self, op: str, out: np.ndarray, inp: np.ndarray | None):
        MPI, comm = self.MPI, self.comm
        if op == "all_reduce":                  # in place, as ringrt's and torch's
            return functools.partial(comm.Allreduce, MPI.IN_PLACE, out, MPI.SUM)
        if op == "broadcast":
            return functools.partial(comm.Bcast, out, 0)
        if op == "reduce_scatter":
            return functools.partial(comm.Reduce_scatter_block, inp, out, MPI.SUM)
        return functools.partial(comm.Allgather, inp, out)

    def close(self) -> None:
        pass                                    # mpi4py finalizes at exit


def open_systems(wanted: set[str], timeout_s: float = 300.0):
    """Start ringrt and whichever of ``wanted`` ({'gloo', 'mpi', 'torch-ringrt'}) can run
    here (torch-ringrt needs gloo: torch's default group).

    Returns:
        (systems, skipped): the systems, ringrt first; and (name, reason) for each one
        wanted but not available.
    """
    skipped = []
    where = launcher()
    mpi = None
    if "mpi" in wanted:
        mpi, reason = _import_mpi(where)
        if mpi is None:
            skipped.append(("mpi", reason))
    _init_ringrt(mpi, timeout_s)
    systems = [Ringrt()]
    if "gloo" in wanted:
        try:
            import torch  # noqa: F401
        except ImportError:
            skipped.append(("gloo", f"torch is not installed: {COMPARE_HINT}"))
        else:
            addr = os.environ.get("MASTER_ADDR") or "127.0.0.1"
            systems.append(Gloo(dist.get_rank(), dist.get_world_size(), addr, timeout_s))
            if "torch-ringrt" in wanted:
                systems.append(TorchRingrt(systems[-1]))
    elif "torch-ringrt" in wanted:
        skipped.append(("torch-ringrt", "needs gloo in --compare (its torch default group)"))
    if mpi is not None:
        systems.append(Mpi(mpi, mpi_label()))
    return systems, skipped


def _import_mpi(where: str):
    if where != "mpirun":
        return None, f"the job was started by {where}, not mpirun; to include MPI: {MPI_HINT}"
    try:
        from mpi4py import MPI
    except ImportError:
        return None, f"mpi4py is not installed: {COMPARE_HINT}"
    return MPI, ""


def _init_ringrt(mpi, timeout_s: float) -> None:
    """``init_process_group()``; under mpirun without MASTER_PORT, rendezvous through MPI:
    rank 0 hosts the store on a free port and broadcasts port and token (raw bytes)."""
    if mpi is None or os.environ.get("MASTER_PORT"):
        dist.init_process_group(timeout=timeout_s)
        return
    comm = mpi.COMM_WORLD
    addr = os.environ.get("MASTER_ADDR") or "127.0.0.1"
    token = os.environ.get("RINGRT_TOKEN") or secrets.token_hex(16)
    if len(token.encode()) > 256:
        raise ValueError("RINGRT_TOKEN is longer than 256 bytes; use a shorter secret")
    message = np.zeros(2 + 256, dtype=np.uint8)
    store = None
    if comm.rank == 0:
        store = dist.Store(addr, 0, token, is_master=True, timeout=timeout_s, rank=0)
        message[:2] = np.frombuffer(store.port.to_bytes(2, "big"), dtype=np.uint8)
        message[2:2 + len(token.encode())] = np.frombuffer(token.encode(), dtype=np.uint8)
    comm.Bcast(message, 0)
    if comm.rank != 0:
        port = int.from_bytes(message[:2].tobytes(), "big")
        token = message[2:].tobytes().rstrip(b"\0").decode()
        store = dist.Store(addr, port, token, timeout=timeout_s, rank=comm.rank)
    dist.init_process_group(store=store, rank=comm.rank, world_size=comm.size,
                            timeout=timeout_s)


def versions() -> dict[str, str]:
    """Versions of everything measured, for the JSON record."""
    found = {"python": sys.version.split()[0], "numpy": np.__version__,
             "ringrt": dist.__version__}
    for module in ("torch", "zmq"):
        mod = sys.modules.get(module)
        if mod is not None:
            found[module] = getattr(mod, "__version__", "?")
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None:
        found["mpi"] = mpi.Get_library_version().splitlines()[0].strip().rstrip("\0")
    found["ringrt_commit"] = _commit()
    return found


def _commit() -> str:
    """The checkout's HEAD (+ '-dirty' when tracked files under ringrt/ differ from it).
    Read-only git, without optional locks, so it never contends with a commit in progress."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(dist.__file__)))
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, env=env,
                              timeout=5, capture_output=True, text=True).stdout.strip()
        changed = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "ringrt"], cwd=root,
                                 env=env, timeout=5, capture_output=True).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (head or "?") + ("-dirty" if changed else "")


def describe_run(run_id: str, skipped, noise: dict | None = None) -> dict:
    """Where and how a run was measured, for the JSON record (load averages and, if measured,
    the cores' interruptions (``_noise``) included: this machine is shared, so a noisy run
    should be visible as one)."""
    knobs = ("RINGRT_ALGO", "RINGRT_NO_SHM", "RINGRT_SEGMENT_BYTES", "RINGRT_TRANSPORT",
             "RINGRT_SHM", "OMPI_MCA_btl", "OMP_NUM_THREADS")
    return {"run": run_id, "launcher": launcher(), "host": platform.node(),
            "cpus": os.cpu_count(), "machine": _machine.describe(),
            "loadavg_start": LOAD_AT_START,
            "loadavg": os.getloadavg(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "argv": sys.argv[1:], "versions": versions(),
            "skipped": {name: reason for name, reason in skipped},
            "noise": noise or {},
            "env": {k: v for k, v in os.environ.items() if k.startswith(knobs)}}
