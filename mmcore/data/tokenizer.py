"""Word-level tokeniser with a vocabulary built on the train split only."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def split_words(text: str, lowercase: bool = True) -> list[str]:
    return _TOKEN.findall(text.lower() if lowercase else text)


@dataclass(frozen=True)
class TextEncoding:
    """Text -> words, as preprocessing stores them and the registered model reads raw text:
    one function for both, so training and serving cannot drift apart."""

    lowercase: bool = True
    max_tokens: int = 32

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> TextEncoding:
        """The encoding recorded in the samples' metadata by preprocessing."""
        return cls(lowercase=meta["lowercase"], max_tokens=meta["max_text_tokens"])

    def words(self, text: str) -> tuple[list[str], bool]:
        """(the first `max_tokens` words, whether the text was longer)."""
        words = split_words(text, self.lowercase)
        return words[: self.max_tokens], len(words) > self.max_tokens


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
