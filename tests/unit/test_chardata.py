"""The character-level corpus (examples/chardata.py): deterministic, and windows line up."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from chardata import CharCorpus, load_text  # noqa: E402


def test_windows_are_the_text_and_the_character_after_it():
    corpus = CharCorpus.load()
    text = load_text()
    x, y = corpus.windows(context=8, split="train", stride=5, limit=50)
    assert x.shape == (50, 8) and y.shape == (50,)
    for i in (0, 17, 49):
        start = 5 * i
        assert corpus.decode(x[i]) == text[start:start + 8]
        assert corpus.decode([y[i]]) == text[start + 8]


def test_val_is_the_held_out_tail_and_disjoint_from_train():
    corpus = CharCorpus.load()
    train, val = corpus.split("train"), corpus.split("val")
    assert len(train) + len(val) == len(corpus.codes)
    assert np.array_equal(np.concatenate([train, val]), corpus.codes)
    assert 0.08 < len(val) / len(corpus.codes) < 0.12


def test_alphabet_is_sorted_and_covers_the_text():
    corpus = CharCorpus.load()
    assert list(corpus.alphabet) == sorted(set(load_text()))
    assert corpus.codes.max() == corpus.vocab_size - 1


def test_bad_arguments_are_refused():
    corpus = CharCorpus.load()
    with pytest.raises(ValueError, match="split"):
        corpus.split("test")
    with pytest.raises(ValueError, match="context"):
        corpus.windows(context=0)
