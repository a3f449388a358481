"""Concatenation fusion."""

from __future__ import annotations

import torch
from torch import nn


class ConcatFusion(nn.Module):
    """dict[modality, (B, d)] -> (B, n*d), modalities in sorted order for a stable layout."""

    def __init__(self, modalities: list[str], dim: int):
        super().__init__()
        self.modalities = sorted(modalities)
        self.out_dim = dim * len(self.modalities)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([x[m] for m in self.modalities], dim=1)
