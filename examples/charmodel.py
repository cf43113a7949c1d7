"""A character-level NumPy model: an embedding of the last ``context`` characters, then an MLP.

For ``examples/train.py --task chars`` (the corpus is ``examples/chardata.py``). Built from
``mlp.py``'s pieces: the dense layers are an :class:`~mlp.MLP` over the concatenated
embeddings, with one more parameter in front, ``emb`` (vocab x dim). No ringrt import here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from mlp import MLP, softmax_cross_entropy


class CharMLP(MLP):
    """Next-character model: ``emb[x]`` flattened, then dense layers with ReLU, softmax.

    Parameters ``emb, w0, b0, w1, b1, ...`` in forward order (what DDP expects).

    Args:
        vocab: alphabet size. context: characters each example sees.
        dim: embedding width. hidden: hidden layer widths. seed: initialisation seed.
    """

    def __init__(self, vocab: int, context: int, dim: int = 16, hidden=(256,), seed: int = 0,
                 dtype=np.float32):
        super().__init__((context * dim, *hidden, vocab), seed=seed, dtype=dtype)
        rng = np.random.default_rng(seed + 1)
        emb = (rng.standard_normal((vocab, dim)) * 0.1).astype(dtype)
        self.params = {"emb": emb, **self.params}

    def forward(self, x: np.ndarray):
        """Logits and the dense layers' inputs for ``(batch, context)`` character indices."""
        return super().forward(self.params["emb"][x].reshape(len(x), -1))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, grads: Mapping[str, np.ndarray],
                       on_layer_done: Callable[[str], None] | None = None,
                       accumulate: bool = False) -> float:
        """As :meth:`MLP.loss_and_grads`, plus the embedding's gradient (reported last)."""
        if accumulate:
            raise NotImplementedError("CharMLP does not accumulate gradients")
        logits, inputs = self.forward(x)
        loss, delta = softmax_cross_entropy(logits, y)
        for i in reversed(range(self.depth)):
            np.sum(delta, axis=0, out=grads[f"b{i}"])
            np.matmul(inputs[i].T, delta, out=grads[f"w{i}"])
            if on_layer_done is not None:
                on_layer_done(f"b{i}")
                on_layer_done(f"w{i}")
            delta = delta @ self.params[f"w{i}"].T
            if i:
                delta *= inputs[i] > 0
        emb_grad = grads["emb"]
        emb_grad[...] = 0
        np.add.at(emb_grad, x.reshape(-1), delta.reshape(x.size, -1))
        if on_layer_done is not None:
            on_layer_done("emb")
        return loss
