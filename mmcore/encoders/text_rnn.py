"""A bidirectional GRU text encoder over token ids."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class TextGRU(nn.Module):
    """(B, L) token ids + (B,) lengths -> (B, dim), from the last hidden state of each direction."""

    def __init__(self, vocab_size: int, dim: int = 64, embedding: int = 32, hidden: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding, padding_idx=0)
        self.rnn = nn.GRU(embedding, hidden, batch_first=True, bidirectional=True)
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, dim), nn.ReLU())
        self.dim = dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embed(tokens), lengths.clamp(min=1).cpu(),
                                      batch_first=True, enforce_sorted=False)
        _, last = self.rnn(packed)  # (2, B, hidden)
        return self.project(torch.cat([last[0], last[1]], dim=1))  # (B, dim)
