"""Concatenation fusion."""

from __future__ import annotations

import torch

from mmcore.fusion.fusion_operator import FusionOperator


class ConcatFusion(FusionOperator):
    """dict[modality, (B, d)] -> (B, M*d): the embeddings side by side, in sorted modality order.

    Missing modality: its slot holds zeros (the input modality dropout trains with).
    """

    def __init__(self, modalities: list[str], dim: int):
        super().__init__(modalities, dim)
        self.out_dim = dim * len(self.modalities)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.zero_filled(x)
        return torch.cat([x[m] for m in self.modalities], dim=1)
