"""A 1-D convolutional text encoder over token ids (Kim, 2014): n-gram detectors, max over time."""

from __future__ import annotations

import torch
from torch import nn

WIDTHS = (3, 5)  # n-gram widths of the two filter banks


class TextCNN(nn.Module):
    """(B, L) token ids + (B,) lengths -> (B, dim): one bank of `hidden` filters per width in
    WIDTHS over the token embeddings, ReLU, the max over the valid positions of each filter."""

    def __init__(self, vocab_size: int, dim: int = 64, embedding: int = 32, hidden: int = 64,
                 dropout: float = 0.25):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embedding, hidden, w, padding=w // 2)
                                   for w in WIDTHS)
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden * len(WIDTHS), dim),
                                     nn.ReLU())
        self.dim = dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]
        x = self.embed(tokens.masked_fill(~valid, 0)).transpose(1, 2)  # (B, E, L); pad = 0
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))[:, :, :tokens.shape[1]]  # (B, hidden, L)
            pooled.append(h.masked_fill(~valid[:, None], 0.0).amax(dim=2))  # ReLU: 0 is a floor
        return self.project(torch.cat(pooled, dim=1))  # (B, dim)
