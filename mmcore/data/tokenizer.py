"""Word-level tokeniser with a vocabulary built on the train split only."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"\w+|[^\w\s]")

# `data.max_text_tokens: auto` (see `auto_max_tokens`)
AUTO_PERCENTILE = 95
AUTO_MIN_TOKENS = 64
AUTO_MAX_TOKENS = 1024
AUTO_MULTIPLE = 16
AUTO_RULE = (f"the {AUTO_PERCENTILE}th percentile of the train texts' lengths in tokens, rounded "
             f"up to a multiple of {AUTO_MULTIPLE}, within [{AUTO_MIN_TOKENS}, {AUTO_MAX_TOKENS}]")


def split_words(text: str, lowercase: bool = True) -> list[str]:
    return _TOKEN.findall(text.lower() if lowercase else text)


@dataclass(frozen=True)
class TextEncoding:
    """Text -> words, as preprocessing stores them and the registered model reads raw text:
    one function for both, so training and serving cannot drift apart."""

    lowercase: bool = True
    max_tokens: int | None = 32  # None: keep every word (preprocessing's first pass)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TextEncoding:
        """The encoding recorded in the samples' metadata by preprocessing."""
        return cls(lowercase=meta["lowercase"], max_tokens=meta["max_text_tokens"])

    def words(self, text: str) -> tuple[list[str], bool]:
        """(the first `max_tokens` words, whether the text was longer)."""
        words = split_words(text, self.lowercase)
        if self.max_tokens is None or len(words) <= self.max_tokens:
            return words, False
        return words[: self.max_tokens], True


def auto_max_tokens(train_lengths: np.ndarray) -> int:
    """`data.max_text_tokens: auto`: AUTO_RULE (the 95th percentile of the train texts' lengths
    in tokens, rounded up to a multiple of 16, within [64, 1024]).

    The percentile follows the data (a few very long texts do not set the length for all);
    texts of up to 64 tokens are never cut, as they cost every encoder little; 1,024 bounds the
    padded batches of long documents (figures: benchmarks/README.md).
    """
    if len(train_lengths) == 0:
        return AUTO_MIN_TOKENS
    high = float(np.percentile(train_lengths, AUTO_PERCENTILE))
    rounded = int(-(-high // AUTO_MULTIPLE) * AUTO_MULTIPLE)
    return min(max(rounded, AUTO_MIN_TOKENS), AUTO_MAX_TOKENS)


class Vocabulary:
    """Token <-> index; index 0 is padding, 1 is unknown."""

    def __init__(self, tokens: Iterable[str]):
        self.tokens = [PAD, UNK, *(t for t in tokens if t not in (PAD, UNK))]
        self.index = {tok: i for i, tok in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, words: Iterable[str]) -> list[int]:
        return [self.index.get(w, 1) for w in words]


def pad_sequences(values: np.ndarray, offsets: np.ndarray, max_len: int | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token ids (Arrow list layout: flat values + offsets) -> (N, L) int64 and lengths.

    Vectorised, so a batch of thousands of texts costs no per-row Python.
    """
    lengths = np.diff(offsets).astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    width = max(1, width if max_len is None else min(width, max_len))
    lengths = np.minimum(lengths, width)
    out = np.zeros((len(lengths), width), dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, cols] = values[np.repeat(offsets[:-1], lengths) + cols]
    return out, np.maximum(lengths, 1)
