"""Select one modality: the fusion of unimodal and cross-modal learning (and of a one-modality
dataset, where fusion is a pass-through)."""

from __future__ import annotations

import torch
from torch import nn


class SelectFusion(nn.Module):
    """dict[modality, (B, d)] -> (B, d) of `modality`. Cross-modal testing feeds another modality's
    shared embedding under this key: that works because both live in one shared space."""

    def __init__(self, modality: str, dim: int):
        super().__init__()
        self.modalities = [modality]
        self.out_dim = dim

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return x[self.modalities[0]]
