"""Sum fusion: the modalities' shared-space embeddings added up."""

from __future__ import annotations

import torch

from mmcore.fusion.fusion_operator import FusionOperator


class SumFusion(FusionOperator):
    """dict[modality, (B, d)] -> (B, d), the sum. Meaningful because all modalities live in one
    shared space.

    Missing modality: it adds nothing (the sum of the modalities present, the same as a zero
    vector in its place).
    """

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([x[m] for m in self.present(x)]).sum(dim=0)
