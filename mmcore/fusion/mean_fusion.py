"""Mean fusion: average of the modalities' shared-space embeddings."""

from __future__ import annotations

import torch
from torch import nn


class MeanFusion(nn.Module):
    """dict[modality, (B, d)] -> (B, d). Works because all modalities live in one shared space."""

    def __init__(self, modalities: list[str], dim: int):
        super().__init__()
        self.modalities = sorted(modalities)
        self.out_dim = dim

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([x[m] for m in self.modalities]).mean(dim=0)
