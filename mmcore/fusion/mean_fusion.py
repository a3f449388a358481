"""Mean fusion: the average of the modalities' shared-space embeddings."""

from __future__ import annotations

import torch

from mmcore.fusion.fusion_operator import FusionOperator


class MeanFusion(FusionOperator):
    """dict[modality, (B, d)] -> (B, d), the mean. Meaningful because all modalities live in one
    shared space.

    Missing modality: the mean of the modalities present. In an aligned shared space paired
    embeddings are close, so the mean of the rest stays near the mean of all, unlike a zero in
    its place, which would shrink the average.
    """

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([x[m] for m in self.present(x)]).mean(dim=0)
