"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

The update is torch.optim.SGD's (https://pytorch.org/docs/stable/generated/torch.optim.SGD.html):

    g = grad + weight_decay * p                       (if weight_decay != 0)
    b = g on the first step, else momentum * b + (1 - dampening) * g   (if momentum != 0)
    g = g + momentum * b if nesterov else b           (if momentum != 0)
    p = p - lr * g
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ringrt.optim._base import Optimizer, _check_number

__all__ = ["SGD"]


class SGD(Optimizer):
    """torch.optim.SGD over a dict of NumPy arrays, updated in place.

    State per parameter: ``step`` and, when ``momentum != 0``, ``momentum_buffer``
    (initialised to the first gradient, as torch does).

    Args:
        params: dict name -> writable floating-point ndarray.
        lr: learning rate (>= 0).
        momentum: momentum factor (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
        nesterov: use Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
        dampening: dampening for momentum (>= 0).

    Raises:
        ValueError: a hyperparameter is out of range.

    Example::

        opt = SGD(model.params, lr=0.1, momentum=0.9)
        opt.step(grads)   # model.params' arrays are updated in place
    """

    _state_keys = ("momentum_buffer",)

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        for key in ("lr", "momentum", "dampening", "weight_decay"):
            group[key] = _check_number("SGD", key, group[key])
        group["nesterov"] = bool(group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "SGD: Nesterov momentum requires a momentum > 0 and zero dampening (got "
                f"momentum={group['momentum']}, dampening={group['dampening']})"
            )

    def _update(
        self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        state["step"] = state.get("step", 0) + 1
        direction = _decayed_grad(param, grad, group["weight_decay"], self._scratch.get(param, 0))
        if group["momentum"] != 0:
            direction = self._momentum_direction(param, direction, state, group)
        step = self._scratch.get(param, 1)
        np.multiply(direction, -group["lr"], out=step)
        param += step

    def _momentum_direction(
        self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> np.ndarray:
        """Advance the momentum buffer and return the direction to step along."""
        momentum, buffer = group["momentum"], state.get("momentum_buffer")
        if buffer is None:
            buffer = state["momentum_buffer"] = np.array(grad, dtype=param.dtype, copy=True)
        else:
            buffer *= momentum
            if group["dampening"] != 0:
                damped = self._scratch.get(param, 1)
                np.multiply(grad, 1 - group["dampening"], out=damped)
                buffer += damped
            else:
                buffer += grad
        if not group["nesterov"]:
            return buffer
        ahead = self._scratch.get(param, 1)
        np.multiply(buffer, momentum, out=ahead)
        ahead += grad
        return ahead


def _decayed_grad(
    param: np.ndarray, grad: np.ndarray, weight_decay: float, out: np.ndarray
) -> np.ndarray:
    """Return ``grad + weight_decay * param`` (in ``out``), or ``grad`` itself if no decay."""
    if weight_decay == 0:
        return grad
    np.multiply(param, weight_decay, out=out)
    out += grad
    return out
