"""Tensor fusion (Zadeh et al. 2017, "Tensor Fusion Network for Multimodal Sentiment Analysis")."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcore.fusion.fusion_operator import FusionOperator


def with_one(z: torch.Tensor) -> torch.Tensor:
    """[z; 1]: (B, d) -> (B, d + 1)."""
    return F.pad(z, (0, 1), value=1.0)


class TensorFusion(FusionOperator):
    """dict[modality, (B, d)] -> (B, (d+1)^M): the outer product of the [z_m; 1] vectors,
    flattened. The appended 1s keep every lower-order term: each modality's own features, each
    pair's products, ..., up to the M-way products. No parameters; the head learns the weights.

    The output grows as (d+1)^M (1,089 for two modalities of 32); `LowRankFusion` is the same
    model with a factorised weight, which never forms the tensor.

    Missing modality: z = 0, so its [0; 1] keeps exactly the terms of the other modalities.
    """

    def __init__(self, modalities: list[str], dim: int):
        super().__init__(modalities, dim)
        self.out_dim = (dim + 1) ** len(self.modalities)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.zero_filled(x)
        fused = with_one(x[self.modalities[0]])
        for m in self.modalities[1:]:
            fused = torch.einsum("bi,bj->bij", fused, with_one(x[m])).flatten(1)
        return fused
