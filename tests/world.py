"""The multi-process test harness: start N ranks, enforce a hard timeout, leave nothing behind.

Each rank is a fresh interpreter (never a fork of the pytest process, which holds zmq
contexts and threads) running ``python -m tests._rank MODULE:FUNCTION``; it starts in its own
session so one ``killpg`` reaches anything it spawned, and it asks the kernel to SIGKILL it if
the harness dies (PR_SET_PDEATHSIG). The harness hosts the rendezvous store itself (bound to
port 0, so no port races) and passes it to the ranks as ``RINGRT_STORE_HOSTED=1``.

A rank's function returns a dict of NumPy arrays and/or JSON values; ``tests/_rank.py`` writes
them to ``rank{R}.npz`` / ``rank{R}.json`` (never pickle), and :func:`run_world` loads them.

Timeouts nest so the most informative one fires first: a rank's op timeout (seconds) < the
world timeout here (stacks are dumped with SIGUSR1 before the kill) < pytest-timeout < CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
_LIVE_PIDS: set[int] = set()          # every rank started and not yet reaped (checked by conftest)


@dataclass
class RankResult:
    rank: int
    returncode: int | None
    stdout: str
    stderr: str
    arrays: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)


class WorldFailed(AssertionError):
    """A rank failed (or the world timed out) when the test expected success."""


@dataclass
class World:
    """Outcome of one multi-process run: ``world[r]`` is rank r's :class:`RankResult`."""

    ranks: list[RankResult]
    timed_out: bool
    elapsed: float

    def __getitem__(self, rank: int) -> RankResult:
        return self.ranks[rank]

    def __len__(self) -> int:
        return len(self.ranks)

    def report(self) -> str:
        parts = [f"world of {len(self.ranks)} (timed out: {self.timed_out}, {self.elapsed:.1f} s)"]
        for result in self.ranks:
            parts.append(
                f"--- rank {result.rank}: exit {result.returncode}\n"
                f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
            )
        return "\n".join(parts)


def process_alive(pid: int, marker: bytes | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie (and, with ``marker``, its command line
    contains it, so a reused pid is not mistaken for ours)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if marker else b""
    except (FileNotFoundError, ProcessLookupError):
        return False
    running = stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return running and (marker is None or marker in cmdline)


def wait_all_dead(pids, timeout: float, marker: bytes | None = None) -> list[int]:
    """Wait up to ``timeout`` s for every pid to be gone; returns those still alive."""
    end = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if process_alive(pid, marker)]
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.02)


def short_tmpdir(prefix: str = "rrt-") -> str:
    """A short directory under /tmp: AF_UNIX socket paths are capped at 107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


@contextlib.contextmanager
def scratch_directory(prefix: str = "rrt-"):
    """A :func:`short_tmpdir` removed with everything in it afterwards."""
    directory = short_tmpdir(prefix)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def line_of(path, marker: str) -> int:
    """The 1-based number of the first line of ``path`` containing ``marker``."""
    with open(path) as file:
        return next(i for i, line in enumerate(file, 1) if marker in line)


def _store_server(token: str):
    from ringrt.store._server import StoreServer

    return StoreServer("127.0.0.1", 0, token=token).start()


def rank_env(rank: int, world_size: int, port: int, token: str, ipc_dir: str,
             extra: dict | None = None) -> dict:
    """The environment a rank gets: what ``ringrun`` would set, plus test knobs."""
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RINGRT_TOKEN=token,
        RINGRT_STORE_HOSTED="1",
        RINGRT_IPC_DIR=ipc_dir,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONFAULTHANDLER="1",
    )
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def _spawn(target: str, rank: int, env: dict, outdir: str, args: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests._rank", target, str(rank), outdir, json.dumps(args)]
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(REPO), start_new_session=True,
        stdout=open(os.path.join(outdir, f"rank{rank}.out"), "w"),
        stderr=open(os.path.join(outdir, f"rank{rank}.err"), "w"),
    )
    _LIVE_PIDS.add(proc.pid)
    return proc


def kill_tree(proc: subprocess.Popen, dump_stacks: bool = False) -> None:
    """Kill a rank and everything in its session; optionally dump its Python stacks first."""
    if proc.poll() is None and dump_stacks:
        try:
            os.kill(proc.pid, signal.SIGUSR1)      # faulthandler.register(SIGUSR1) in _rank
        except ProcessLookupError:
            pass
    for sig in (signal.SIGKILL,):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _LIVE_PIDS.discard(proc.pid)


def _read_results(outdir: str, rank: int, returncode: int | None) -> RankResult:
    def text(name):
        path = os.path.join(outdir, name)
        return open(path, errors="replace").read() if os.path.exists(path) else ""

    arrays, values = {}, {}
    npz = os.path.join(outdir, f"rank{rank}.npz")
    if os.path.exists(npz):
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    js = os.path.join(outdir, f"rank{rank}.json")
    if os.path.exists(js):
        values = json.load(open(js))
    return RankResult(rank, returncode, text(f"rank{rank}.out"), text(f"rank{rank}.err"),
                      arrays, values)


def run_world(
    target: str,
    world_size: int,
    timeout: float = 60.0,
    args: dict | None = None,
    env: dict | None = None,
    per_rank_env: dict | None = None,
    expect_success: bool = True,
    stop_on_failure: bool = True,
    failure_grace: float = 15.0,
    ranks: list[int] | None = None,
    on_started=None,
    token: str | None = None,
) -> World:
    """Run ``target`` ("module:function") on ``world_size`` fresh processes.

    Args:
        target: worker function, called as ``fn(rank, world_size, **args)``.
        timeout: hard limit for the whole world; stacks are dumped, then every rank killed.
        env / per_rank_env: extra variables for all ranks / ``{rank: {...}}``.
        expect_success: raise :class:`WorldFailed` with every rank's output unless all exit 0.
        stop_on_failure: once one rank fails, give the others ``failure_grace`` seconds to
            exit by themselves (ringrt should make them raise) and then kill them.
        ranks: start only these ranks (e.g. to test a rank that never arrives).
        on_started: called with ``(store_server, procs)`` once the ranks are running.
        token: the job's RINGRT_TOKEN (default: a fresh random one).
    """
    token = token or secrets.token_hex(16)
    outdir = short_tmpdir("rrw-")
    ipc_dir = short_tmpdir("rri-")
    server = _store_server(token)
    procs: dict[int, subprocess.Popen] = {}
    start = time.monotonic()
    timed_out = False
    try:
        for rank in (range(world_size) if ranks is None else ranks):
            extra = dict(env or {})
            extra.update((per_rank_env or {}).get(rank, {}))
            procs[rank] = _spawn(target, rank, rank_env(rank, world_size, server.port, token,
                                                        ipc_dir, extra), outdir, args or {})
        if on_started is not None:
            on_started(server, procs)
        timed_out = _supervise(procs, start + timeout, stop_on_failure, failure_grace)
    finally:
        for proc in procs.values():
            kill_tree(proc, dump_stacks=timed_out and proc.poll() is None)
        server.close()
    world = World(
        [_read_results(outdir, r, procs[r].returncode) for r in sorted(procs)],
        timed_out, time.monotonic() - start,
    )
    leftovers = os.listdir(ipc_dir) if os.path.isdir(ipc_dir) else []
    shutil.rmtree(outdir, ignore_errors=True)
    shutil.rmtree(ipc_dir, ignore_errors=True)
    if expect_success and (timed_out or any(r.returncode != 0 for r in world.ranks)):
        raise WorldFailed(world.report())
    if expect_success and leftovers:
        raise WorldFailed(f"ipc files left behind: {leftovers}\n" + world.report())
    return world


def _supervise(procs: dict, deadline: float, stop_on_failure: bool, grace: float) -> bool:
    """Wait for every rank; returns True if the world timed out."""
    stop_at = None
    while True:
        codes = {r: p.poll() for r, p in procs.items()}
        if all(c is not None for c in codes.values()):
            return False
        now = time.monotonic()
        if now >= deadline:
            return True
        if stop_on_failure and stop_at is None and any(c not in (None, 0) for c in codes.values()):
            stop_at = now + grace
        if stop_at is not None and now >= stop_at:
            return False          # the finally-block in run_world kills the stragglers
        time.sleep(0.02)
