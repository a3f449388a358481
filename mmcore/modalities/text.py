"""Texts: stored as token ids of the train-split vocabulary; raw texts go through the same
`TextEncoding` that preprocessing ran."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from mmcore.config import FeaturesConfig
from mmcore.data.tokenizer import TextEncoding, Vocabulary, pad_sequences
from mmcore.encoders import TEXT_ENCODERS

Batch = dict[str, torch.Tensor]
# Buckets of the hashed bag of words a text's `evidence` is (token id modulo this): every word of
# a small vocabulary its own bucket, a large one's vocabulary in a fixed width.
EVIDENCE_BUCKETS = 256


class TextModality:
    name = "text"
    columns = ("tokens",)

    def epochs(self, cfg: FeaturesConfig) -> int | str:
        return cfg.text_epochs

    def step_budget(self, cfg: FeaturesConfig) -> int:
        return cfg.auto_steps

    def build_encoder(self, cfg: FeaturesConfig, meta: dict[str, Any]) -> nn.Module:
        return TEXT_ENCODERS[cfg.text_encoder](meta["vocab_size"], cfg.text_dim,
                                               cfg.text_embedding, cfg.text_hidden, cfg.dropout)

    def input_layer(self, meta: dict[str, Any]) -> nn.Module:
        return nn.Identity()

    def from_table(self, table: pa.Table, meta: dict[str, Any]) -> Batch:
        column = table.column("tokens")
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        return _padded(column.values.to_numpy(zero_copy_only=False), column.offsets.to_numpy())

    def from_raw(self, values: list[Any], meta: dict[str, Any]) -> Batch:
        """`meta` must carry the vocabulary (`vocab`: its tokens in index order)."""
        encoding = TextEncoding.from_meta(meta)
        vocab = Vocabulary(meta["vocab"][2:])
        ids = [vocab.encode(encoding.words("" if t is None else str(t))[0]) for t in values]
        offsets = np.cumsum([0, *map(len, ids)])
        return _padded(np.array([i for seq in ids for i in seq], dtype=np.int64), offsets)

    def embed(self, encoder: nn.Module, batch: Batch) -> torch.Tensor:
        return encoder(batch["tokens"], batch["lengths"])

    def blank(self, batch: Batch) -> torch.Tensor:
        """No token beyond padding and `<unk>` (ids 0 and 1, mmcore.data.tokenizer)."""
        return (batch["tokens"] <= 1).all(dim=1)

    def evidence(self, batch: Batch) -> torch.Tensor:
        """Which words occur (a hashed multi-hot bag, padding left out): a text of random words
        is a bag no real text has, which a bag-of-words embedding can blur into a plausible one."""
        tokens = batch["tokens"]
        bag = torch.zeros(tokens.shape[0], EVIDENCE_BUCKETS)
        bag.scatter_(1, tokens % EVIDENCE_BUCKETS, 1.0)
        bag[:, 0] = 0.0  # padding (id 0); the bucket's other words count through their ids
        return bag


def _padded(values: np.ndarray, offsets: np.ndarray) -> Batch:
    tokens, lengths = pad_sequences(values, offsets)
    return {"tokens": torch.from_numpy(tokens), "lengths": torch.from_numpy(lengths)}
