"""The optimizer base class: parameters, one param group, per-name state, state_dict.

A subclass supplies three things: ``_validate_group`` (torch's hyperparameter checks),
``_update`` (the in-place math for one array) and ``_state_keys`` (the array names its
per-parameter state holds, so ``load_state_dict`` can check them). Everything else (grad
validation, the ``lr`` property, state_dict round trips, scratch buffers) lives here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ringrt._observe import timeline

__all__ = ["Optimizer"]


def _check_params(params: Any) -> dict[str, np.ndarray]:
    """Validate ``params`` (dict name -> writable floating ndarray) and return a shallow copy."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"optimizer params must be a dict of name -> numpy array, got {type(params).__name__}"
            "; pass e.g. model.params or ddp.params"
        )
    if not params:
        raise ValueError("optimizer got an empty parameter dict; pass at least one array")
    for name, param in params.items():
        if not isinstance(name, str):
            raise TypeError(f"optimizer param names must be str, got {name!r}")
        if not isinstance(param, np.ndarray):
            raise TypeError(
                f"optimizer param {name!r} must be a numpy.ndarray (updated in place), "
                f"got {type(param).__name__}"
            )
        if not np.issubdtype(param.dtype, np.floating):
            raise TypeError(
                f"optimizer param {name!r} has dtype {param.dtype}; optimizers update "
                "floating-point arrays in place, so convert it with .astype(np.float32)"
            )
        if not param.flags.writeable:
            raise ValueError(f"optimizer param {name!r} is read-only; pass a writable array")
    return dict(params)


def _check_number(owner: str, key: str, value: Any, low: float = 0.0) -> float:
    """Return ``value`` as float, raising ValueError unless it is a real number >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{owner}: {key} must be a number, got {value!r}")
    if not value >= low:  # also rejects NaN
        raise ValueError(f"{owner}: invalid {key} {value!r}; it must be >= {low}")
    return float(value)


class _Scratch:
    """Reusable temporaries so a step allocates no full-size arrays.

    One buffer per (dtype, slot), sized to the largest parameter of that dtype; a step
    borrows a view shaped like the parameter it is updating.
    """

    def __init__(self, params: Mapping[str, np.ndarray]):
        self._capacity: dict[np.dtype, int] = {}
        for param in params.values():
            self._capacity[param.dtype] = max(self._capacity.get(param.dtype, 0), param.size)
        self._buffers: dict[tuple[np.dtype, int], np.ndarray] = {}

    def get(self, like: np.ndarray, slot: int = 0) -> np.ndarray:
        """Return an uninitialised buffer shaped and typed like ``like``.

        Args:
            like: the parameter the temporary is for.
            slot: which of the independent temporaries (0, 1, ...) to return.

        Returns:
            A C-contiguous view; its contents are garbage until written.
        """
        key = (like.dtype, slot)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.size < like.size:
            size = max(self._capacity.get(like.dtype, 0), like.size)
            buffer = self._buffers[key] = np.empty(size, dtype=like.dtype)
        return buffer[: like.size].reshape(like.shape)

    def nbytes(self) -> int:
        """Total bytes of the temporaries allocated so far."""
        return sum(buffer.nbytes for buffer in self._buffers.values())


class Optimizer:
    """Base class of ringrt's optimizers: torch.optim semantics over a dict of NumPy arrays.

    ``params`` is a dict name -> ndarray; :meth:`step` updates those arrays in place from a
    dict of gradients. There is one param group, ``param_groups[0]``, a dict of the
    hyperparameters (plus ``"params"``, the list of names); changing it (or :attr:`lr`)
    takes effect at the next step, which is how schedulers drive it.

    Args:
        params: dict name -> writable floating-point ndarray, updated in place.
        defaults: the hyperparameters of the single param group.

    Raises:
        TypeError: ``params`` is not a dict of floating-point arrays.
        ValueError: ``params`` is empty, an array is read-only, or a hyperparameter is invalid.
    """

    _state_keys: tuple[str, ...] = ()

    def __init__(self, params: Mapping[str, np.ndarray], defaults: dict[str, Any]):
        self.params = _check_params(params)
        group = dict(defaults)
        self._validate_group(group)
        group["params"] = list(self.params)
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = [group]
        self.state: dict[str, dict[str, Any]] = {}
        self._scratch = _Scratch(self.params)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.param_groups[0].items() if k != "params")
        return f"{type(self).__name__}({len(self.params)} params, {hyper})"

    @property
    def lr(self) -> float:
        """The learning rate, ``param_groups[0]["lr"]``; assign to change it (schedulers do)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.param_groups[0]["lr"] = _check_number(type(self).__name__, "lr", value)

    def step(self, grads: Mapping[str, np.ndarray]) -> None:
        """Update every parameter that has a gradient, in place.

        Args:
            grads: dict name -> gradient array shaped like the parameter. Names that are
                absent (or map to None) have no gradient and are skipped, as torch skips
                parameters whose ``.grad`` is None; their state does not advance.

        Raises:
            KeyError: ``grads`` names a parameter this optimizer does not hold.
            ValueError: a gradient's shape differs from its parameter's.
        """
        group = self.param_groups[0]
        with timeline.span(f"{type(self).__name__}.step", "optimizer"):
            for name, param, grad in self._pairs(grads):
                self._update(param, grad, self.state.setdefault(name, {}), group)

    def _pairs(self, grads: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Return (name, param, grad) for every parameter with a gradient, all checked first.

        Everything is validated before any parameter changes, so a bad gradient never leaves
        a half-applied step behind.
        """
        if not isinstance(grads, Mapping):
            raise TypeError(f"step() takes a dict name -> gradient, got {type(grads).__name__}")
        unknown = [name for name in grads if name not in self.params]
        if unknown:
            raise KeyError(
                f"step(): gradients for unknown parameters {unknown}; this optimizer holds "
                f"{list(self.params)}"
            )
        pairs = []
        for name, param in self.params.items():
            grad = grads.get(name)
            if grad is None:
                continue
            grad = np.asarray(grad)
            if grad.shape != param.shape:
                raise ValueError(
                    f"step(): gradient for {name!r} has shape {grad.shape} but the parameter "
                    f"has shape {param.shape}"
                )
            pairs.append((name, param, grad))
        return pairs

    def state_bytes(self) -> int:
        """Bytes held by optimizer state arrays (momentum, moments); scratch not included."""
        return sum(
            value.nbytes
            for state in self.state.values()
            for value in state.values()
            if isinstance(value, np.ndarray)
        )

    def state_dict(self) -> dict[str, Any]:
        """Return a snapshot of the optimizer state in plain types.

        Returns:
            ``{"state": {name: {"step": int, <array name>: ndarray, ...}}, "param_groups":
            [{hyperparameters..., "params": [names]}]}``, made only of dicts, lists, str,
            numbers and (copied) ndarrays, so it can be msgpack'd or saved as ``.npy`` files.
        """
        state = {
            name: {key: _snapshot(value) for key, value in entry.items()}
            for name, entry in self.state.items()
        }
        groups = [{key: _snapshot(value) for key, value in self.param_groups[0].items()}]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore state saved by :meth:`state_dict`, so training continues identically.

        Arrays are copied into this optimizer (cast to each parameter's dtype), and the saved
        hyperparameters replace the current ones, as in torch.

        Args:
            state_dict: a dict returned by :meth:`state_dict` (possibly after a round trip
                through msgpack / ``.npy``, so tuples may have become lists).

        Raises:
            KeyError: a required entry is missing.
            ValueError: names, shapes or hyperparameters do not fit this optimizer.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        group = self._loaded_group(owner, state_dict)
        state = {
            name: self._loaded_entry(owner, name, entry)
            for name, entry in _require(owner, state_dict, "state").items()
        }
        self.param_groups[0].update(group)
        self.state = state

    def _loaded_group(self, owner: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Return the validated hyperparameters of a saved state dict."""
        groups = _require(owner, state_dict, "param_groups")
        if len(groups) != 1:
            raise ValueError(f"{owner}: expected 1 param group, got {len(groups)}")
        group = {key: value for key, value in groups[0].items() if key != "params"}
        names = groups[0].get("params")
        if names is not None and set(names) != set(self.params):
            raise ValueError(
                f"{owner}: saved for parameters {sorted(names)} but this optimizer holds "
                f"{sorted(self.params)}"
            )
        merged = {**self.param_groups[0], **group}
        self._validate_group(merged)
        return {key: merged[key] for key in merged if key != "params"}

    def _loaded_entry(self, owner: str, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Return one parameter's saved state, checked and copied into the param's dtype."""
        param = self.params.get(name)
        if param is None:
            raise ValueError(
                f"{owner}: state for unknown parameter {name!r}; this optimizer holds "
                f"{sorted(self.params)}"
            )
        loaded: dict[str, Any] = {"step": int(_require(owner, entry, "step"))}
        for key in self._state_keys:
            if key not in entry:
                continue
            value = np.asarray(entry[key])
            if value.shape != param.shape:
                raise ValueError(
                    f"{owner}: {name!r} {key} has shape {value.shape} but the parameter has "
                    f"shape {param.shape}"
                )
            loaded[key] = np.array(value, dtype=param.dtype, order="C", copy=True)
        return loaded

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Check (and normalise in place) the hyperparameters; raise ValueError if invalid."""
        raise NotImplementedError

    def _update(
        self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        """Apply one step to ``param`` in place, advancing ``state``."""
        raise NotImplementedError


def _snapshot(value: Any) -> Any:
    """Copy arrays and turn tuples into lists, so a state dict shares nothing live."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (tuple, list)):
        return [_snapshot(item) for item in value]
    return value


def _require(owner: str, mapping: Mapping[str, Any], key: str) -> Any:
    """Return ``mapping[key]`` or raise a KeyError saying what the state dict lacks."""
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise KeyError(f"{owner}: state dict has no {key!r} entry; pass what state_dict() returned")
    return mapping[key]
