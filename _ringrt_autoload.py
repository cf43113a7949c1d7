"""torch's ``torch.backends`` entry point: the "ringrt" backend without ``import ringrt.torch``.

torch >= 2.5 calls :func:`register` during ``import torch`` for every installed package that
declares an entry point in the group ``torch.backends`` (``torch/__init__.py``,
``_import_device_backends``), unless ``TORCH_DEVICE_BACKEND_AUTOLOAD=0``. Every script then
has the backend, so do frameworks that build the process group themselves (Lightning, Ray
Train, Accelerate).

That call is paid by every ``import torch`` on the machine, so it must be cheap: this module
is top-level (importing anything under ``ringrt`` would first import ``ringrt/__init__.py``,
numpy and zmq: see torch_autoload_cost) and imports nothing torch has not imported already
(``torch.distributed`` is, by the time backends load). It registers the name with a creator
that imports ``ringrt.torch`` on its first call, and wraps ``env://`` so that under ringrun
(``RINGRT_STORE_HOSTED=1``) the rendezvous imports ``ringrt.torch`` and goes through ringrt's
store, as an explicit import would have arranged. ``import ringrt.torch`` later replaces both
with the real ones.
"""

from __future__ import annotations

import os

BACKEND_NAME = "ringrt"


def register() -> None:
    """Register "ringrt" with torch.distributed, deferring ringrt's own import to first use."""
    import torch.distributed as dist

    if not dist.is_available() or BACKEND_NAME.upper() in dist.Backend._plugins:
        return          # a torch without distributed, or ringrt.torch already imported
    dist.Backend.register_backend(BACKEND_NAME, _create, extended_api=True, devices=["cpu"])
    _wrap_env_rendezvous()


def _create(options, backend_options=None):
    """torch's creator for "ringrt": import the backend now, then hand it the call."""
    from ringrt.torch import _creator

    return _creator.create(options, backend_options)


def _wrap_env_rendezvous() -> None:
    """Route ``env://`` under ringrun through ringrt's store, importing ringrt only then."""
    from torch.distributed.constants import default_pg_timeout
    from torch.distributed.rendezvous import _rendezvous_handlers

    torch_env = _rendezvous_handlers["env"]

    def env_handler(url: str, timeout=default_pg_timeout, **kwargs):
        if not _ringrun_hosts_store():
            yield from torch_env(url, timeout=timeout, **kwargs)
            return
        import ringrt.torch  # noqa: F401  (installs ringrt's env:// handler over this one)

        yield from _rendezvous_handlers["env"](url, timeout=timeout, **kwargs)

    env_handler.ringrt_lazy_wraps = torch_env      # type: ignore[attr-defined]
    _rendezvous_handlers["env"] = env_handler


def _ringrun_hosts_store() -> bool:
    """``RINGRT_STORE_HOSTED`` as ringrt._settings reads it: this module runs in every Python
    process at startup, so it reads the variable itself rather than import ringrt."""
    return os.environ.get("RINGRT_STORE_HOSTED", "").strip().lower() in ("1", "true", "yes", "on")
