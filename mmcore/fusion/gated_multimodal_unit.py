"""Gated multimodal unit (Arevalo et al. 2017, "Gated Multimodal Units for Information Fusion")."""

from __future__ import annotations

import torch
from torch import nn

from mmcore.fusion.fusion_operator import FusionOperator


class GatedMultimodalUnit(FusionOperator):
    """dict[modality, (B, d)] -> (B, d): h = sum_m z_m * tanh(W_m x_m), with gates
    z = softmax over modalities of W_z [x_1; ...; x_M], one gate per modality and feature.

    For two modalities the softmax is the paper's sigmoid gate (z, 1 - z); the softmax extends
    it to any number of modalities. Each modality keeps its own transform W_m (biases added).

    Missing modality: masked. Its gate logits are set to -inf, so the gates of the modalities
    present sum to 1 and its transform contributes nothing; in the gate's input it is zeros.
    """

    def __init__(self, modalities: list[str], dim: int):
        super().__init__(modalities, dim)
        n = len(self.modalities)
        self.transforms = nn.ModuleDict({m: nn.Linear(dim, dim) for m in self.modalities})
        self.gate = nn.Linear(n * dim, n * dim)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        filled = self.zero_filled(x)
        inputs = [filled[m] for m in self.modalities]
        batch = inputs[0].shape[0]
        logits = self.gate(torch.cat(inputs, dim=1)).view(batch, len(inputs), self.dim)
        present = torch.tensor([m in x for m in self.modalities], device=logits.device)
        gates = logits.masked_fill(~present[None, :, None], float("-inf")).softmax(dim=1)
        hidden = torch.stack([torch.tanh(self.transforms[m](v))
                              for m, v in zip(self.modalities, inputs, strict=True)], dim=1)
        return (gates * hidden).sum(dim=1)  # (B, d)
