"""Rank-side functions for the rendezvous tests: torchrun, a TCPStore handed to
init_process_group (what tcp:// builds), env:// through ringrt's store, a wrong token."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time

import torch
import torch.distributed as dist

import ringrt.torch  # noqa: F401 - registers the backend
from ringrt.store import Store
from ringrt.torch._stores import TorchStoreOverRingrt
from tests.world import REPO, short_tmpdir

# What the harness sets as ringrun would; torchrun must not see them (it sets its own).
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                      "MASTER_PORT", "RINGRT_STORE_HOSTED")


def under_torchrun(rank: int, world: int, nproc: int) -> dict:
    """Run tests/torch/scripts/torchrun_job.py with ``torchrun --standalone``; its ranks
    write their results as JSON files into a scratch directory."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env["RESULT_DIR"] = results_dir = short_tmpdir("rrj-")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    started = time.monotonic()
    try:
        done = subprocess.run(
            [torchrun, "--standalone", "--nproc-per-node", str(nproc),
             str(REPO / "tests" / "torch" / "scripts" / "torchrun_job.py")],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
        results = [json.load(open(os.path.join(results_dir, name)))
                   for name in sorted(os.listdir(results_dir))]
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)
    return {"returncode": done.returncode, "results": results,
            "seconds": time.monotonic() - started, "stderr": done.stderr[-3000:]}


def through_a_tcp_store(rank: int, world: int) -> dict:
    """torch's TCPStore (rank 0 binds port 0; the port travels through the harness's
    store) handed to init_process_group, as the tcp:// handler does."""
    harness = Store(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rank=rank,
                    timeout=30)
    if rank == 0:
        tcp = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False,
                            timeout=datetime.timedelta(seconds=30))
        harness.set("tcp-port", str(tcp.port))
    else:
        port = int(harness.get("tcp-port"))
        tcp = dist.TCPStore("127.0.0.1", port, world, is_master=False,
                            timeout=datetime.timedelta(seconds=30))
    dist.init_process_group("ringrt", store=tcp, rank=rank, world_size=world)
    total = torch.full((3,), float(rank + 1))
    dist.all_reduce(total)
    odd = dist.new_group([1, 2])
    pair = torch.full((2,), float(rank))
    dist.all_reduce(pair, group=odd)
    dist.barrier()
    dist.destroy_process_group()
    harness.close()
    return {"total": total.tolist(), "pair": pair.tolist()}


def through_a_file(rank: int, world: int, path: str) -> dict:
    """init_method="file://PATH": torch's FileStore, which has no server (ringrt binds the
    interface that routes to MASTER_ADDR)."""
    dist.init_process_group("ringrt", init_method=f"file://{path}", rank=rank, world_size=world)
    total = torch.full((3,), float(rank + 1))
    dist.all_reduce(total)
    pair = torch.ones(2)
    dist.all_reduce(pair, group=dist.new_group([0, 1]))
    dist.destroy_process_group()
    return {"total": total.tolist(), "pair": pair.tolist()}


def env_through_ringrt_store(rank: int, world: int) -> dict:
    """env:// as under ringrun: torch's store is ringrt's (the token-checked one), for the
    default group and for gloo groups alike."""
    dist.init_process_group("ringrt")
    store = dist.distributed_c10d._get_default_store()
    while isinstance(store, dist.PrefixStore):
        store = store.underlying_store
    gloo = dist.new_group(backend="gloo")
    x = torch.ones(2)
    dist.all_reduce(x, group=gloo)
    out = {"store": type(store).__name__, "ringrt_store": isinstance(store,
                                                                    TorchStoreOverRingrt),
           "gloo_sum": x.tolist(), "backend": dist.get_backend()}
    dist.destroy_process_group()
    dist.init_process_group("ringrt")                     # a second init in one process
    y = torch.full((2,), float(rank))
    dist.all_reduce(y)
    out["second_init"] = y.tolist()
    dist.destroy_process_group()
    dist.init_process_group("gloo")                       # gloo's world, a ringrt subgroup:
    ours = dist.new_group(backend="ringrt")               # a ringrt world of its own
    z = torch.full((2,), float(rank + 1))
    dist.all_reduce(z, group=ours)
    out["under_gloo"] = [z.tolist(), dist.get_backend(ours)]
    dist.destroy_process_group()
    return out


def wrong_token(rank: int, world: int) -> dict:
    """Rank 1 has the wrong RINGRT_TOKEN: ringrt's store refuses it; rank 0 times out."""
    start = time.monotonic()
    try:
        dist.init_process_group("ringrt", timeout=datetime.timedelta(seconds=4))
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return {"error": type(exc).__name__, "message": str(exc),
                "took": time.monotonic() - start}
    dist.destroy_process_group()
    return {"error": "none"}
