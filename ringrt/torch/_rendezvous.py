"""``env://`` under ringrun: torch rendezvouses through ringrt's authenticated store.

``ringrun`` hosts ringrt's store on ``MASTER_PORT`` and says so with
``RINGRT_STORE_HOSTED=1``. torch's own ``env://`` handler would make rank 0 bind a TCPStore
on that port (taken) and the others speak TCPStore's protocol to ringrt's server, so
``import ringrt.torch`` swaps in a handler that, only when ringrt hosts the store, connects
to it with ``RINGRT_TOKEN`` (refused without it) and hands torch a
:class:`~ringrt.torch._stores.TorchStoreOverRingrt`: torch's own keys -- and those of gloo
groups made in the same job -- then live in ringrt's store, under a prefix per job attempt
and per ``init_process_group`` (ringrun's store outlives restarted workers). Anywhere else
(torchrun, a plain script) torch's handler runs unchanged.

torch offers no way to replace a registered handler (``register_rendezvous_handler``
refuses a scheme twice), so the entry in ``torch.distributed.rendezvous`` is swapped; the
swap is idempotent and falls back to torch's handler, which it keeps.
"""

from __future__ import annotations

import atexit
import urllib.parse

from torch.distributed.constants import default_pg_timeout
from torch.distributed.rendezvous import _rendezvous_handlers

from ringrt._curve import derive_keys
from ringrt._deadline import seconds
from ringrt._env import resolve_job
from ringrt._settings import read_setting
from ringrt.store import Store
from ringrt.torch._stores import TorchStoreOverRingrt

_opened: list[TorchStoreOverRingrt] = []     # closed at exit (or when the world shuts down)
_init_count = 0


def install() -> None:
    """Make ``env://`` use ringrt's store whenever ringrun hosts it (idempotent)."""
    handlers = _rendezvous_handlers
    torch_env = handlers["env"]
    if getattr(torch_env, "ringrt_wraps", None) is not None:
        return
    # The autoloaded stand-in (_ringrt_autoload) imports ringrt.torch on its first hosted
    # rendezvous; replace it, keeping torch's handler as the fallback.
    torch_env = getattr(torch_env, "ringrt_lazy_wraps", torch_env)

    def env_handler(url: str, timeout=default_pg_timeout, **kwargs):
        if not read_setting("RINGRT_STORE_HOSTED"):
            yield from torch_env(url, timeout=timeout, **kwargs)
            return
        yield through_ringrt_store(url, timeout)
        raise RuntimeError("Unable to perform re-rendezvous using env:// method")

    env_handler.ringrt_wraps = torch_env
    handlers["env"] = env_handler


def through_ringrt_store(url: str, timeout) -> tuple[TorchStoreOverRingrt, int, int]:
    """(store, rank, world_size) for torch, the store being ringrt's on MASTER_PORT.

    Rank and world size come from the URL's query (``init_process_group(rank=...,
    world_size=...)`` puts them there), else from ``RANK`` / ``WORLD_SIZE``.

    Raises:
        ringrt.errors.AuthenticationError: the store refused this process's RINGRT_TOKEN.
        ringrt.errors.TimeoutError: no store answered within ``timeout``.
    """
    global _init_count
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(url).query))
    rank = int(query["rank"]) if "rank" in query else None
    world_size = int(query["world_size"]) if "world_size" in query else None
    job = resolve_job("env://", rank, world_size)
    extra = {"curve": derive_keys(job.token)} if job.encrypt else {}
    store = Store(job.master_addr, job.master_port, job.token, timeout=seconds(timeout),
                  rank=job.rank, **extra)
    adapter = TorchStoreOverRingrt(store, f"torch/attempt{job.restart_count}/"
                                          f"init{_init_count}/")
    _init_count += 1
    _opened.append(adapter)
    return adapter, job.rank, job.world_size


def close_stores() -> None:
    """Close every store this process opened for torch (at exit, or once torch's default
    group is gone)."""
    while _opened:
        _opened.pop().close()


atexit.register(close_stores)
