"""Adam (L2 weight decay) and AdamW (decoupled weight decay), as torch.optim computes them.

Per step t (https://pytorch.org/docs/stable/generated/torch.optim.Adam.html and AdamW.html):

    p = p * (1 - lr * weight_decay)                   (AdamW only)
    g = grad + weight_decay * p                       (Adam only, if weight_decay != 0)
    m = m + (1 - beta1) * (g - m)                     (torch's lerp form of beta1*m + (1-beta1)*g)
    v = beta2 * v + (1 - beta2) * g * g
    p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

Each line is a few whole-array ufunc calls into the parameter's dtype; temporaries come from
the optimizer's scratch buffers, so a step over one flat shard (the ZeRO layout) is a single
vectorised pass that allocates nothing of the shard's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ringrt.optim._base import Optimizer, _check_number
from ringrt.optim.sgd import _decayed_grad

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """torch.optim.Adam over a dict of NumPy arrays, updated in place.

    State per parameter: ``step`` (int), ``exp_avg`` and ``exp_avg_sq`` (the first and second
    moment estimates, in the parameter's dtype).

    Args:
        params: dict name -> writable floating-point ndarray.
        lr: learning rate (>= 0).
        betas: decay rates of the moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0). For decoupled weight decay
            use :class:`AdamW`.

    Raises:
        ValueError: a hyperparameter is out of range.
    """

    _state_keys = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    def _validate_group(self, group: dict[str, Any]) -> None:
        owner = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            group[key] = _check_number(owner, key, group[key])
        group["betas"] = _check_betas(owner, group["betas"])

    def _loaded_entry(self, owner: str, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
        loaded = super()._loaded_entry(owner, name, entry)
        missing = [key for key in self._state_keys if key not in loaded]
        if missing:
            raise KeyError(f"{owner}: state of {name!r} lacks {missing}")
        return loaded

    def _update(
        self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
        state["step"] += 1
        if self._decoupled:
            param *= 1 - lr * weight_decay
        else:
            grad = _decayed_grad(param, grad, weight_decay, self._scratch.get(param, 0))
        work = self._scratch.get(param, 1)
        _update_moments(grad, state["exp_avg"], state["exp_avg_sq"], beta1, beta2, work)
        _apply_update(param, state, lr, beta1, beta2, group["eps"], work)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay ``p *= 1 - lr * weight_decay``.

    Args:
        params: dict name -> writable floating-point ndarray.
        lr: learning rate (>= 0).
        betas: decay rates of the moment estimates, each in [0, 1).
        eps: added to the denominator for numerical stability (>= 0).
        weight_decay: decoupled weight decay coefficient (>= 0).

    Raises:
        ValueError: a hyperparameter is out of range.
    """

    _decoupled = True

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def _update_moments(
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    beta1: float,
    beta2: float,
    work: np.ndarray,
) -> None:
    """Advance the moment estimates in place; ``work`` is a scratch array like them."""
    np.multiply(grad, grad, out=work)
    work *= 1 - beta2
    exp_avg_sq *= beta2
    exp_avg_sq += work
    np.subtract(grad, exp_avg, out=work)
    work *= 1 - beta1
    exp_avg += work


def _apply_update(
    param: np.ndarray,
    state: dict[str, Any],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    work: np.ndarray,
) -> None:
    """``param -= lr / bc1 * exp_avg / (sqrt(exp_avg_sq) / sqrt(bc2) + eps)``, in place."""
    step = state["step"]
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5  # torch uses ** 0.5, not math.sqrt
    np.sqrt(state["exp_avg_sq"], out=work)
    work /= bias_correction2_sqrt
    work += eps
    np.divide(state["exp_avg"], work, out=work)
    work *= -step_size
    param += work


def _check_betas(owner: str, betas: Any) -> tuple[float, float]:
    """Return ``betas`` as a float pair, raising ValueError unless each is in [0, 1)."""
    if not isinstance(betas, Sequence) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    for index, beta in enumerate(betas):
        value = _check_number(owner, f"beta parameter at index {index}", beta)
        if not value < 1:
            raise ValueError(
                f"{owner}: invalid beta parameter at index {index}: {beta!r}; it must be in [0, 1)"
            )
    return float(betas[0]), float(betas[1])
