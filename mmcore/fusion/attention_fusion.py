"""Attention fusion: self-attention over the modalities as tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmcore.fusion.fusion_operator import FusionOperator


class AttentionFusion(FusionOperator):
    """dict[modality, (B, d)] -> (B, d). Each modality's embedding plus a learned modality
    embedding is one token; one multi-head self-attention layer (residual, LayerNorm) lets each
    token read the others, and the tokens are mean-pooled. `heads` defaults to gcd(d, 4).

    Missing modality: masked (its token is left out; the attention and the pooling run over the
    tokens present).
    """

    def __init__(self, modalities: list[str], dim: int, *, heads: int | None = None,
                 dropout: float = 0.0):
        super().__init__(modalities, dim)
        self.modality_embedding = nn.Parameter(0.02 * torch.randn(len(self.modalities), dim))
        self.attention = nn.MultiheadAttention(dim, heads or math.gcd(dim, 4), dropout=dropout,
                                               batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        present = self.present(x)
        index = [self.modalities.index(m) for m in present]
        tokens = torch.stack([x[m] for m in present], dim=1) + self.modality_embedding[index]
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)  # (B, P, d)
        return self.norm(tokens + attended).mean(dim=1)
