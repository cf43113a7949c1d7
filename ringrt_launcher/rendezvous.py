"""The rendezvous store, hosted by node 0's launcher so that it outlives any one worker.

Workers are told ``RINGRT_STORE_HOSTED=1`` so rank 0 does not host a second one. The store is
kept for the whole job, across restarts: workers namespace their keys by
``RINGRT_RESTART_COUNT``, and on several hosts the other nodes keep reaching the same port.
"""

from __future__ import annotations

import errno
import socket
import time

import click

from ringrt_launcher.config import LaunchConfig
from ringrt_launcher.errors import LaunchError
from ringrt_launcher.output import Console

# Node 0's workers may finish before those of other nodes, which still talk to the store while
# they shut down; node 0 keeps it up until their connections close, this long at most.
STORE_LINGER = 30.0
LINGER_POLL = 0.05


def host_store(config: LaunchConfig):
    """Start the store on node 0 (``master_port`` 0 = a free port); None on other nodes.

    Returns:
        The running ``StoreServer``; read the bound port from ``.port`` and ``close()`` it.

    Raises:
        click.BadParameter: (exit 2) the port is in use, or the address is not this host's.
        LaunchError: the store failed to start for another reason.
    """
    if not config.hosts_store:
        return None
    from ringrt._curve import derive_keys
    from ringrt.errors import StoreError
    from ringrt.store._server import StoreServer

    port = config.master_port
    where = f"{config.store_host}:{port}" if port else f"{config.store_host} (any free port)"
    try:
        curve = derive_keys(config.token) if config.encrypt else None
        return StoreServer(config.store_host, port, token=config.token, curve=curve).start()
    except (OSError, StoreError) as exc:
        code = getattr(exc, "errno", None) or getattr(exc.__cause__, "errno", None)
        if code == errno.EADDRINUSE:
            raise click.BadParameter(
                f"{where} is already in use; pick another port, e.g. --master-port "
                f"{_free_port(config.store_host)}, or leave --master-port out on a single host "
                "to get a free one", param_hint="--master-port") from exc
        if code == errno.EADDRNOTAVAIL:
            raise click.BadParameter(
                f"cannot listen on {where}: {config.store_host} is not an address of this host; "
                "run node 0 on the host --master-addr names, or pass --bind-addr 0.0.0.0 to "
                "listen on every interface", param_hint="--master-addr") from exc
        raise LaunchError(f"cannot start the rendezvous store on {where}: {exc}") from exc


def _free_port(host: str) -> int:
    """A port that is free right now: only a suggestion for the user, never bound by us."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            return probe.getsockname()[1]
    except OSError:
        return 29501


def release_store(server, config: LaunchConfig, console: Console, succeeded: bool) -> None:
    """Close the store; after a successful multi-host run, first let other nodes finish."""
    if server is None:
        return
    try:
        if succeeded and config.nnodes > 1:
            _wait_for_clients_to_leave(server, console)
    finally:
        server.close()


def _wait_for_clients_to_leave(server, console: Console) -> None:
    from ringrt._deadline import Deadline  # ringrt is loaded by now (host_store)

    linger = Deadline(STORE_LINGER)
    open_now = server.stats()["connections_open"]
    if open_now:
        console.note(f"keeping the store up until the other nodes' {open_now} connection(s) "
                     f"close (at most {STORE_LINGER:g} s)")
    while server.stats()["connections_open"] and not linger.expired():
        time.sleep(LINGER_POLL)
