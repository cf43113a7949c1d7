"""The one reader of what a launcher tells a rank: env://, tcp://, SLURM, Open MPI and PMI.

``resolve_job(init_method, rank, world_size)`` turns whatever the job was started with into a
frozen :class:`JobSpec`. Precedence, as in torch: explicit arguments, then ``RANK`` /
``WORLD_SIZE`` (set by ``ringrun`` or torchrun), then SLURM (``srun``), then Open MPI / PMI
(``mpirun``).

Only the launchers' own variables are read here (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, SLURM's, Open MPI's, PMI's, and
``HOME`` / ``XDG_CONFIG_HOME`` for the token file); ringrt's own ``RINGRT_*`` settings come
from the registry in :mod:`ringrt._settings`, handed in as a :class:`~ringrt._settings.Settings`.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ringrt._settings import Settings, env_int

DEFAULT_MASTER_PORT = 29500

# (rank variable, world-size variable, local-rank variable, name) in precedence order.
_LAUNCHER_SOURCES = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK", "env"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "slurm"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "openmpi"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "pmi"),
    ("PMIX_RANK", "PMIX_SIZE", "MPI_LOCALRANKID", "pmix"),
)


@dataclass(frozen=True)
class JobSpec:
    """Everything a rank needs to join its job, read once at ``init_process_group``."""

    rank: int
    world_size: int
    master_addr: str
    master_port: int
    token: str
    source: str                 # env | tcp | slurm | openmpi | pmi | pmix | args
    local_rank: int = 0
    restart_count: int = 0
    store_hosted_elsewhere: bool = False   # the launcher hosts the store; rank 0 must not
    encrypt: bool | None = None            # tri-state: see _settings.env_encrypt
    insecure_tcp: bool = False             # RINGRT_INSECURE_TCP: unauthenticated tcp links


def user_token_path(env=None, settings: Settings | None = None) -> Path | None:
    """Where this user's own token lives when the job sets no RINGRT_TOKEN:
    ``RINGRT_TOKEN_FILE``, else ``$XDG_CONFIG_HOME/ringrt/token``, else
    ``$HOME/.config/ringrt/token``; None without a home."""
    env = os.environ if env is None else env
    settings = Settings.read(env) if settings is None else settings
    if settings.token_file:
        return Path(settings.token_file)
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "ringrt" / "token"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".config" / "ringrt" / "token"
    return None


def job_token(env=None, settings: Settings | None = None) -> str:
    """The job's shared secret: ``RINGRT_TOKEN`` (ringrun sets a fresh one per job), else this
    user's own secret in :func:`user_token_path` (created 0600 on first use), so a job
    started by mpirun or srun without a token is still closed to other users; ranks on
    hosts that do not share that file must be given ``RINGRT_TOKEN``.

    Raises:
        PermissionError: the token file is readable by other users, or owned by someone else.
    """
    env = os.environ if env is None else env
    settings = Settings.read(env) if settings is None else settings
    if settings.token:
        return settings.token
    path = user_token_path(env, settings)
    if path is None:
        return ""
    try:
        return _read_private(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise
        return ""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staged = path.with_name(f".token-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(staged, path)              # never replaces a token another rank made
        except FileExistsError:
            pass
        finally:
            os.unlink(staged)
        return _read_private(path)
    except OSError:
        return ""                              # no writable home: the job runs without one


def _read_private(path: Path) -> str:
    info = path.stat()
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path} holds ringrt's token but is not private to you (owner "
                              f"{info.st_uid}, mode {info.st_mode & 0o777:o}); chmod 600 it, "
                              "or set RINGRT_TOKEN")
    return path.read_text().strip()


def local_world_size(env=None) -> int:
    """``LOCAL_WORLD_SIZE``: ranks the launcher started on this host (1 when unset)."""
    return env_int("LOCAL_WORLD_SIZE", 1, os.environ if env is None else env)


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'node[03-05,9],gpu1' -> 'node03'."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return nodelist
    stem, ranges = match.groups()
    if not ranges:
        return stem
    return stem + ranges.split(",")[0].split("-")[0]


def _default_master(source: str, env) -> tuple[str, int]:
    """MASTER_ADDR/PORT when the launcher (srun, mpirun) did not set them."""
    addr = env.get("MASTER_ADDR")
    if not addr:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        addr = _first_slurm_host(nodelist) if source == "slurm" and nodelist else "127.0.0.1"
    port = env_int("MASTER_PORT", env=env)
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"environment variable MASTER_PORT={port} is not a port (0..65535)")
    if port is None:
        # Derive a port from the job id so every rank of one mpirun/srun agrees without talking.
        job = (env.get("SLURM_JOB_ID") or env.get("OMPI_MCA_ess_base_jobid")      # Open MPI 4
               or env.get("OMPI_MCA_orte_ess_jobid") or env.get("PMIX_NAMESPACE")  # 3 / PMIx
               or env.get("PMI_ID_JOB") or "")
        offset = int(hashlib.sha256(job.encode()).hexdigest(), 16) % 2000 if job else 0
        port = DEFAULT_MASTER_PORT + offset
    return addr, port


def _rank_and_size(rank, world_size, env) -> tuple[int, int, int, str]:
    if rank is not None and world_size is not None:
        return int(rank), int(world_size), env_int("LOCAL_RANK", int(rank), env), "args"
    for rank_var, size_var, local_var, source in _LAUNCHER_SOURCES:
        if env.get(rank_var) not in (None, "") and env.get(size_var) not in (None, ""):
            found_rank = env_int(rank_var, env=env) if rank is None else int(rank)
            found_size = env_int(size_var, env=env) if world_size is None else int(world_size)
            return found_rank, found_size, env_int(local_var, 0, env), source
    raise ValueError(
        "cannot tell this process's rank: pass rank= and world_size= to init_process_group, "
        "set RANK and WORLD_SIZE, or start the script with ringrun, srun or mpirun"
    )


def resolve_job(init_method: str | None, rank: int | None, world_size: int | None,
                encrypt: bool | None = None, env=None,
                settings: Settings | None = None) -> JobSpec:
    """Resolve rank, world size, rendezvous address and token for ``init_process_group``
    (``settings``: ringrt's own variables, by default read from ``env`` now).

    Raises:
        ValueError: the method is unknown, or rank / world size are missing or inconsistent.
    """
    env = os.environ if env is None else env
    settings = Settings.read(env) if settings is None else settings
    method = init_method or "env://"
    try:
        parsed = urllib.parse.urlparse(method)
        parsed.port                    # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:          # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ValueError(f"init_method {method!r} is not a URL ({exc}): use 'env://' or "
                         "'tcp://HOST:PORT'") from None
    if parsed.scheme not in ("env", "tcp"):
        raise ValueError(
            f"init_method {method!r} is not supported: use 'env://' or 'tcp://HOST:PORT'"
        )
    found_rank, found_size, local_rank, source = _rank_and_size(rank, world_size, env)
    if parsed.scheme == "tcp":
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"init_method {method!r} needs a host and a port: tcp://HOST:PORT")
        addr, port, source = parsed.hostname, parsed.port, "tcp" if source == "args" else source
    else:
        addr, port = _default_master(source, env)
    if found_size < 1:
        raise ValueError(f"world_size must be >= 1, got {found_size}")
    if not 0 <= found_rank < found_size:
        raise ValueError(f"rank must be in [0, {found_size}), got {found_rank}")
    return JobSpec(
        rank=found_rank,
        world_size=found_size,
        master_addr=addr,
        master_port=port,
        token=job_token(env, settings),
        source=source,
        local_rank=local_rank,
        restart_count=settings.restart_count,
        store_hosted_elsewhere=settings.store_hosted,
        encrypt=settings.encrypt if encrypt is None else bool(encrypt),
        insecure_tcp=settings.insecure_tcp,
    )
