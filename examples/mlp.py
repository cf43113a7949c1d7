"""A NumPy multi-layer perceptron with a hand-written backward, and the digits data set.

Shared by ``examples/train.py``, ``benchmarks/training/train_step.py`` and the DDP / ZeRO tests
(which train the same model in one process as the reference). No ringrt import here: the model
knows nothing about distribution; the backward reports each finished layer through a callback,
which is where DDP's ``grad_ready`` plugs in.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

DIGITS_CSV = Path(__file__).resolve().parent / "data" / "digits.csv.gz"


class MLP:
    """Dense layers with ReLU between them and a softmax cross-entropy loss.

    Parameters are ``w0, b0, w1, b1, ...`` in forward order (the registration order DDP
    expects); ``params`` may be replaced by another dict of the same arrays (e.g. ``ddp.params``).

    Args:
        sizes: layer widths, input first, e.g. ``(64, 128, 64, 10)``.
        seed: initialisation seed (He-normal weights, zero biases).
        dtype: parameter dtype.
    """

    def __init__(self, sizes: Sequence[int] = (64, 128, 64, 10), seed: int = 0,
                 dtype=np.float32):
        rng = np.random.default_rng(seed)
        self.sizes = tuple(sizes)
        self.params: Mapping[str, np.ndarray] = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            scale = np.sqrt(2.0 / fan_in)
            self.params[f"w{i}"] = (rng.standard_normal((fan_in, fan_out)) * scale).astype(dtype)
            self.params[f"b{i}"] = np.zeros(fan_out, dtype)

    @property
    def depth(self) -> int:
        return len(self.sizes) - 1

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits and the layer inputs the backward needs."""
        inputs = []
        for i in range(self.depth):
            inputs.append(x)
            x = x @ self.params[f"w{i}"]
            x += self.params[f"b{i}"]                   # in place: no temporaries
            if i < self.depth - 1:
                np.maximum(x, 0, out=x)
        return x, inputs

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, grads: Mapping[str, np.ndarray],
                       on_layer_done: Callable[[str], None] | None = None,
                       accumulate: bool = False) -> float:
        """Mean cross-entropy over the batch; gradients written IN PLACE into ``grads``.

        Args:
            x: ``(batch, sizes[0])`` inputs. y: ``(batch,)`` integer labels.
            grads: name -> array like each parameter (e.g. ``ddp.grads``).
            on_layer_done: called with each parameter name as soon as its gradient is final,
                last layer first (DDP's ``grad_ready``).
            accumulate: add to ``grads`` instead of overwriting (gradient accumulation).
        """
        logits, inputs = self.forward(x)
        loss, delta = softmax_cross_entropy(logits, y)
        for i in reversed(range(self.depth)):
            if accumulate:
                grads[f"b{i}"] += delta.sum(axis=0)
                grads[f"w{i}"] += inputs[i].T @ delta
            else:                       # straight into the gradient arrays: no copies
                np.sum(delta, axis=0, out=grads[f"b{i}"])
                np.matmul(inputs[i].T, delta, out=grads[f"w{i}"])
            if on_layer_done is not None:
                on_layer_done(f"b{i}")
                on_layer_done(f"w{i}")
            if i:
                delta = delta @ self.params[f"w{i}"].T
                delta *= inputs[i] > 0
        return loss

    def loss(self, x: np.ndarray, y: np.ndarray, batch: int = 4096) -> float:
        """Mean cross-entropy over ``x`` (evaluated ``batch`` rows at a time)."""
        total = 0.0
        for start in range(0, len(y), batch):
            logits = self.forward(x[start:start + batch])[0]
            total += softmax_cross_entropy(logits, y[start:start + batch])[0] * len(logits)
        return total / len(y)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Fraction of ``x`` classified as ``y``."""
        return float(np.mean(self.forward(x)[0].argmax(axis=1) == y))


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    batch = len(y)
    loss = -float(log_probs[np.arange(batch), y].mean())
    delta = np.exp(log_probs)
    delta[np.arange(batch), y] -= 1
    return loss, delta / batch


def load_digits(test_fraction: float = 0.2, seed: int = 0, dtype=np.float32):
    """The UCI digits (1797 8x8 images), split deterministically into train and test.

    Returns:
        ``(x_train, y_train, x_test, y_test)``; pixels scaled to [0, 1], labels int64.
    """
    with gzip.open(DIGITS_CSV, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    x, y = (table[:, :-1] / 16.0).astype(dtype), table[:, -1].astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = round(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
