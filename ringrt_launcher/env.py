"""The environment each worker starts with (what ``ringrt.init_process_group`` reads).

==========================  ===================================================================
``RANK``                    ``node_rank * nproc + local_rank``
``LOCAL_RANK``              0 .. nproc-1 on this host
``WORLD_SIZE``              ``nnodes * nproc``
``LOCAL_WORLD_SIZE``        nproc
``NODE_RANK``               this host's ``--node-rank``
``MASTER_ADDR/PORT``        where the rendezvous store listens (the port node 0 bound)
``RINGRT_TOKEN``            the job's shared secret (fresh per job on a single host)
``RINGRT_RESTART_COUNT``    0, then 1, 2, ... after each ``--max-restarts`` restart (elastic:
                            after each restart of the worker group, == the generation)
``RINGRT_GENERATION``       elastic jobs only (``--nnodes MIN:MAX``): the membership round,
                            set by ``ringrt_launcher/elastic.py`` (``Supervisor.extra_env``)
``RINGRT_STORE_HOSTED``     1: the launcher hosts the store, so rank 0 must not
``RINGRT_TIMEOUT``          ``--timeout`` (seconds), only when given
``RINGRT_ENCRYPT``          1 with ``--encrypt``
``RINGRUN_TTY``             1 when ringrun's stdout is a terminal (progress bars can be drawn)
``RINGRT_IPC_DIR``          a short per-job directory under /tmp for the workers' ipc:// socket
                            files, removed when the job ends (even if workers were SIGKILLed);
                            an ``RINGRT_IPC_DIR`` already set is passed on and left alone
``OMP_NUM_THREADS``         1 when several workers share the host and it is not already set
                            (as torchrun does), so N workers do not each start a thread per core;
                            with ``--bind core|numa``, the CPUs the rank was given (binding.py)
``PYTHONUNBUFFERED``        1, so output reaches the console line by line
``RINGRT_TRACE``            ``--trace FILE`` (absolute), with ``RINGRT_TRACE_MERGE=launcher``:
                            ringrun merges the ranks' files into FILE at the end
``RINGRT_FLIGHT_DIR``       where workers dump their flight recorders (set by the supervisor)
==========================  ===================================================================

This module is the launcher's one reader of its own environment: it copies it into each
worker's, and reads the settings ringrun honours itself, ``RINGRT_IPC_DIR`` and (elastic
agents' keepalives) ``RINGRT_HEARTBEAT_INTERVAL`` and ``RINGRT_HEARTBEAT_TIMEOUT``, through
ringrt's registry (``ringrt._settings``), which documents every ``RINGRT_*`` variable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

from ringrt_launcher.config import LaunchConfig
from ringrt_launcher.errors import LaunchError


def worker_env(config: LaunchConfig, local_rank: int, restart_count: int, master_port: int,
               ipc_dir: str, tty: bool = False, threads: int | None = None) -> dict[str, str]:
    """The launcher's environment plus the variables in the table above.

    ``tty``: the console's stdout is a terminal (sets ``RINGRUN_TTY``). ``threads``: the
    rank's CPU count under ``--bind`` (its ``OMP_NUM_THREADS`` unless the user set one).
    """
    env = dict(os.environ)
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    elif config.nproc > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    env.update(
        RANK=str(config.global_rank(local_rank)),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(config.world_size),
        LOCAL_WORLD_SIZE=str(config.nproc),
        NODE_RANK=str(config.node_rank),
        MASTER_ADDR=config.master_addr,
        MASTER_PORT=str(master_port),
        RINGRT_TOKEN=config.token,
        RINGRT_RESTART_COUNT=str(restart_count),
        RINGRT_STORE_HOSTED="1",
        RINGRT_IPC_DIR=ipc_dir,
        PYTHONUNBUFFERED="1",
    )
    if config.timeout is not None:
        env["RINGRT_TIMEOUT"] = repr(config.timeout)
    if config.encrypt:
        env["RINGRT_ENCRYPT"] = "1"
    if config.trace:
        env.update(RINGRT_TRACE=config.trace, RINGRT_TRACE_MERGE="launcher")
    if tty:
        env["RINGRUN_TTY"] = "1"          # workers may draw \r progress bars (output.py)
    return env


@contextlib.contextmanager
def ipc_directory() -> Iterator[str]:
    """The job's ``RINGRT_IPC_DIR``: the user's, or a fresh one removed on exit."""
    # here: --help should not pay for importing ringrt
    from ringrt._comm import stale
    from ringrt._settings import read_setting

    preset = read_setting("RINGRT_IPC_DIR")
    if preset:
        yield preset
        return
    # Short and under /tmp: AF_UNIX socket paths are capped at 107 bytes. Named with our pid
    # and locked while we run, so the next ringrun (or rank) removes it if we are SIGKILLed.
    stale.sweep_jobs()
    path, lock = stale.make_owned_dir("ringrun-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def heartbeat() -> tuple[float, float]:
    """(interval, timeout) in seconds: ``RINGRT_HEARTBEAT_INTERVAL`` and
    ``RINGRT_HEARTBEAT_TIMEOUT``, the workers' heartbeat and, in elastic jobs, the agents'
    keepalive (``keepalive.py``), so a node is lost after the same silence either way.

    Raises:
        LaunchError: a value is not a positive number of seconds.
    """
    from ringrt._settings import read_setting

    try:
        return (read_setting("RINGRT_HEARTBEAT_INTERVAL"),
                read_setting("RINGRT_HEARTBEAT_TIMEOUT"))
    except ValueError as exc:
        raise LaunchError(str(exc)) from exc
