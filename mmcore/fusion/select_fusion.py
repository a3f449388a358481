"""Select one modality: the fusion of unimodal and cross-modal learning (and of a one-modality
dataset, where fusion is a pass-through). Not in the registry: it is not a way to combine
modalities, and `build_classifier` picks it by learning mode."""

from __future__ import annotations

import torch

from mmcore.fusion.fusion_operator import FusionOperator


class SelectFusion(FusionOperator):
    """dict[modality, (B, d)] -> (B, d) of `modality`. Cross-modal testing feeds another modality's
    shared embedding under this key: that works because both live in one shared space.

    Missing modality: an error, since there is nothing else to predict from.
    """

    def __init__(self, modality: str, dim: int):
        super().__init__([modality], dim)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return x[self.present(x)[0]]
