"""The job as ``ringrun`` understood it: click options -> one frozen :class:`LaunchConfig`.

Every check that can fail before a process starts lives here (``build_config``), so a mistake
is reported as a usage error (exit 2) naming the option and the fix, and nothing is spawned.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import threading
from dataclasses import dataclass

import click

DEFAULT_MASTER_PORT = 29500        # torchrun's default, used when several nodes must agree
LOOPBACK = "127.0.0.1"
RESOLVE_TIMEOUT = 10.0             # seconds; getaddrinfo has no timeout of its own
TOKEN_HELP = (
    "set the same secret on every host, e.g.\n"
    "    export RINGRT_TOKEN=$(python -c 'import secrets;print(secrets.token_hex(16))')\n"
    "(or pass --token, which other users can see in `ps`)"
)


@dataclass(frozen=True)
class LaunchConfig:
    """One ``ringrun`` invocation, validated.

    ``store_host`` is the address node 0 binds the store to; ``master_port`` 0 means "choose a
    free port" (single host only). ``console_ranks`` holds the local ranks whose output is shown
    on the console (None: all); log files always get every rank.
    """

    nproc: int
    target: str
    args: tuple[str, ...] = ()
    module: bool = False
    no_python: bool = False
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = LOOPBACK
    master_port: int = 0
    store_host: str = LOOPBACK
    token: str = ""
    max_restarts: int = 0
    grace: float = 3.0
    timeout: float | None = None
    log_dir: str | None = None
    console_ranks: frozenset[int] | None = None
    bind: str = "none"               # --bind none|core|numa, or "cpu" (--cpu-bind)
    verbose: bool = False
    encrypt: bool = False
    trace: str | None = None
    min_nodes: int | None = None     # --nnodes MIN:MAX (elastic); nnodes is then MAX
    join_timeout: float = 600.0
    last_call: float = 10.0

    @property
    def elastic(self) -> bool:
        """``--nnodes MIN:MAX``: membership is agreed in rendezvous rounds (elastic.py)."""
        return self.min_nodes is not None

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc

    @property
    def hosts_store(self) -> bool:
        """Only node 0's launcher hosts the rendezvous store."""
        return self.node_rank == 0

    def global_rank(self, local_rank: int) -> int:
        return self.node_rank * self.nproc + local_rank

    def command(self) -> list[str]:
        """The worker command line, as ``python`` / ``python -m`` / the bare executable."""
        if self.no_python:
            return [self.target, *self.args]
        if self.module:
            return [sys.executable, "-m", self.target, *self.args]
        return [sys.executable, self.target, *self.args]


def build_config(opts: dict) -> LaunchConfig:
    """Validate the click options of ``ringrun`` and freeze them.

    Raises:
        click.UsageError: (exit 2) any option or combination that cannot work.
    """
    min_nodes, nnodes = opts["nnodes"]
    elastic = min_nodes is not None
    multi_host = nnodes > 1 or elastic
    _check_target(opts["target"], opts["module"], opts["no_python"])
    if elastic:
        _check_elastic(min_nodes, nnodes, opts["node_rank"], opts["master_addr"])
        if opts.get("trace"):
            raise click.UsageError(
                "--trace is not supported with --nnodes MIN:MAX yet (each generation would "
                "write over the last one's rank files); set RINGRT_TRACE=FILE in the script's "
                "environment per generation, or trace a fixed-size run")
    node_rank = opts["node_rank"] or 0
    _check_node(nnodes, node_rank, opts["master_addr"])
    master_addr = opts["master_addr"] or LOOPBACK
    master_ip = resolve_host(master_addr, "--master-addr")
    store_host = opts["bind_addr"] or master_ip
    if opts["bind_addr"]:
        resolve_host(opts["bind_addr"], "--bind-addr")
    port = opts["master_port"]
    if port is None:
        port = DEFAULT_MASTER_PORT if multi_host else 0
    bind = _bind_mode(opts.get("bind", "none"), opts["cpu_bind"])
    return LaunchConfig(
        nproc=opts["nproc"],
        target=opts["target"],
        args=tuple(opts["args"]),
        module=opts["module"],
        no_python=opts["no_python"],
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        master_port=port,
        store_host=store_host,
        token=_token(opts["token"], multi_host),
        max_restarts=opts["max_restarts"],
        grace=opts["grace"],
        timeout=opts["timeout"],
        log_dir=_log_dir(opts["log_dir"]),
        console_ranks=_console_ranks(opts["local_ranks_filter"], opts["quiet_ranks"],
                                     opts["nproc"]),
        bind=bind,
        verbose=opts.get("verbose", False),
        encrypt=opts["encrypt"],
        trace=_trace_path(opts.get("trace")),
        min_nodes=min_nodes,
        join_timeout=opts.get("join_timeout", 600.0),
        last_call=opts.get("last_call", 10.0),
    )


class NodeCount(click.ParamType):
    """``--nnodes``: ``N`` -> (None, N); torchrun's elastic ``MIN:MAX`` -> (MIN, MAX)."""

    name = "nnodes"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        low, colon, high = text.partition(":")
        try:
            numbers = (int(low), int(high)) if colon else (None, int(text))
        except ValueError:
            self.fail(f"{value!r} is neither a node count N nor a range MIN:MAX (e.g. 2:4)",
                      param, ctx)
        minimum, maximum = numbers
        if maximum < 1 or (minimum is not None and minimum < 1):
            self.fail(f"{value!r}: node counts must be >= 1", param, ctx)
        if minimum is not None and minimum > maximum:
            self.fail(f"{value!r}: MIN {minimum} is larger than MAX {maximum}", param, ctx)
        return numbers


def _check_elastic(min_nodes: int, max_nodes: int, node_rank: int | None,
                   master_addr: str | None) -> None:
    if node_rank is not None:
        raise click.UsageError(
            f"--node-rank cannot be used with --nnodes {min_nodes}:{max_nodes}: in an elastic "
            "job the rendezvous assigns node ranks (the node hosting the store is node 0)")
    if not master_addr:
        raise click.UsageError(
            f"--nnodes {min_nodes}:{max_nodes} needs --master-addr: the host whose ringrun "
            "hosts the store, reachable from every host (and the same --master-port everywhere)")


def _check_target(target: str, module: bool, no_python: bool) -> None:
    if module and no_python:
        raise click.UsageError("-m/--module and --no-python cannot be used together")
    if module:
        return                      # python -m reports a missing module itself, in the summary
    if no_python:
        if shutil.which(target) is None:
            raise click.BadParameter(
                f"executable {target!r} not found on PATH and not an executable file",
                param_hint="SCRIPT")
        return
    if not os.path.isfile(target):
        hint = " (use -m for a module)" if "/" not in target and not target.endswith(".py") else ""
        raise click.BadParameter(
            f"script {target!r} not found (working directory: {os.getcwd()}){hint}",
            param_hint="SCRIPT")


def _check_node(nnodes: int, node_rank: int, master_addr: str | None) -> None:
    if not 0 <= node_rank < nnodes:
        raise click.BadParameter(
            f"node rank {node_rank} is not in [0, {nnodes}) for --nnodes {nnodes}",
            param_hint="--node-rank")
    if nnodes > 1 and not master_addr:
        raise click.UsageError(
            f"--nnodes {nnodes} needs --master-addr: the address of node 0, reachable from "
            "every host (and the same --master-port on every host)")


def resolve_host(host: str, option: str) -> str:
    """The first IP address ``host`` resolves to, or a usage error naming ``option``."""
    result: list = []

    def lookup():
        try:
            result.append(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
        except (OSError, UnicodeError) as exc:
            result.append(exc)

    thread = threading.Thread(target=lookup, daemon=True, name="resolve")
    thread.start()
    thread.join(RESOLVE_TIMEOUT)
    if not result:
        raise click.BadParameter(
            f"cannot resolve {host!r}: no answer within {RESOLVE_TIMEOUT:g} s", param_hint=option)
    if isinstance(result[0], Exception):
        raise click.BadParameter(
            f"cannot resolve {host!r} ({result[0]}); give a host name this machine can resolve "
            "or an IP address", param_hint=option)
    return result[0]


def _token(token: str | None, multi_host: bool) -> str:
    if token:
        return token
    if multi_host:
        raise click.UsageError(
            "a multi-host job needs a shared RINGRT_TOKEN so that only your hosts can join the "
            "rendezvous store; " + TOKEN_HELP)
    return secrets.token_hex(16)        # fresh per job: no other local user can join


def _trace_path(path: str | None) -> str | None:
    if path is None:
        return None
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise click.BadParameter(f"directory of {path!r} does not exist", param_hint="--trace")
    return path


def _log_dir(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create {path!r}: {exc}", param_hint="--log-dir") from None
    return os.path.abspath(path)


def _console_ranks(spec: str | None, quiet: bool, nproc: int) -> frozenset[int] | None:
    if spec is not None and quiet:
        raise click.UsageError("use either --local-ranks-filter or --quiet-ranks, not both")
    if quiet:
        return frozenset({0})
    if spec is None:
        return None
    try:
        ranks = frozenset(int(part) for part in spec.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(
            f"{spec!r} is not a comma-separated list of local ranks, e.g. 0,2",
            param_hint="--local-ranks-filter") from None
    outside = sorted(r for r in ranks if not 0 <= r < nproc)
    if not ranks or outside:
        raise click.BadParameter(
            f"local ranks must be in [0, {nproc}) for -n {nproc}, got {spec!r}",
            param_hint="--local-ranks-filter")
    return ranks


def _bind_mode(bind: str, cpu_bind: bool) -> str:
    """--bind's mode; --cpu-bind is the older one-CPU-per-rank form ("cpu")."""
    if cpu_bind and bind != "none":
        raise click.UsageError(f"--cpu-bind and --bind {bind}: give one (--bind {bind} gives "
                               "each rank its share of the CPUs, --cpu-bind one CPU each)")
    mode = "cpu" if cpu_bind else bind
    if mode != "none" and not hasattr(os, "sched_setaffinity"):
        raise click.UsageError(f"--bind {mode} needs os.sched_setaffinity (Linux); use "
                               "--bind none here")
    return mode
