"""A character-level text task built from text CPython ships: ``pydoc_data.topics``.

Harder than the digits: next-character prediction keeps improving for many epochs, so it
separates training methods by time to a validation loss. The corpus is built the same way on
every machine (the topics in sorted key order, joined), so no download and no file to ship.
Shared by the NumPy and torch examples and benchmarks. No ringrt import here.

    corpus = CharCorpus.load()
    x, y = corpus.windows(context=32, split="train")   # x: (n, 32) int32 indices, y: (n,) next char
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

VALIDATION_FRACTION = 0.1   # the corpus's last 10 % is held out


@cache
def load_text() -> str:
    """The corpus: every pydoc topic's text in sorted key order (about 465,000 characters)."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


@dataclass(frozen=True)
class CharCorpus:
    """The corpus encoded as indices into its sorted alphabet.

    Attributes:
        alphabet: the distinct characters, sorted; index i encodes ``alphabet[i]``.
        codes: the whole text as int32 indices.
    """

    alphabet: str
    codes: np.ndarray

    @classmethod
    def load(cls) -> CharCorpus:
        text = load_text()
        alphabet = "".join(sorted(set(text)))
        lookup = {ch: i for i, ch in enumerate(alphabet)}
        codes = np.fromiter((lookup[ch] for ch in text), dtype=np.int32, count=len(text))
        return cls(alphabet, codes)

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    def split(self, split: str) -> np.ndarray:
        """The codes of ``"train"`` (first 90 %) or ``"val"`` (last 10 %)."""
        cut = int(len(self.codes) * (1 - VALIDATION_FRACTION))
        if split == "train":
            return self.codes[:cut]
        if split == "val":
            return self.codes[cut:]
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")

    def windows(self, context: int, split: str = "train", stride: int = 1,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every ``context`` characters and the one that follows them.

        Args:
            context: characters each example sees.
            split: ``"train"`` or ``"val"``.
            stride: step between consecutive windows' starts.
            limit: keep at most this many windows (the first ones), for quick runs.

        Returns:
            ``(x, y)``: x of shape ``(n, context)`` and y of shape ``(n,)``, int32 indices.
        """
        if context < 1 or stride < 1:
            raise ValueError(f"context and stride must be >= 1, got {context} and {stride}")
        codes = self.split(split)
        starts = np.arange(0, len(codes) - context, stride)
        if limit is not None:
            starts = starts[:limit]
        x = codes[starts[:, None] + np.arange(context)]
        y = codes[starts + context]
        return x, y

    def decode(self, indices) -> str:
        return "".join(self.alphabet[int(i)] for i in indices)
