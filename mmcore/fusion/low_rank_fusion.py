"""Low-rank multimodal fusion (Liu et al. 2018, "Efficient Low-rank Multimodal Fusion with
Modality-Specific Factors")."""

from __future__ import annotations

import torch
from torch import nn

from mmcore.fusion.fusion_operator import FusionOperator
from mmcore.fusion.tensor_fusion import with_one


class LowRankFusion(FusionOperator):
    """dict[modality, (B, d)] -> (B, out_dim): tensor fusion followed by a linear layer whose
    weight is a sum of `rank` products of modality-specific factors W_m^(r) ((d+1) x out_dim):

        h = sum_r lambda_r * prod_m ([z_m; 1] W_m^(r)) + b

    which equals W . (outer product of the [z_m; 1]) for the rank-`rank` weight W, without
    forming the (d+1)^M tensor. `out_dim` defaults to d.

    Missing modality: z = 0, as in `TensorFusion`: its factor contributes only its bias row.
    """

    def __init__(self, modalities: list[str], dim: int, *, rank: int = 4,
                 out_dim: int | None = None):
        super().__init__(modalities, dim)
        self.out_dim = out_dim or dim
        self.rank = rank
        # Each factor maps [z; 1] like a linear layer would: std 1/sqrt(d+1) keeps every
        # factor's output, and so their product, of order one at the start.
        self.factors = nn.ParameterDict({
            m: nn.Parameter(torch.randn(rank, dim + 1, self.out_dim) * (dim + 1) ** -0.5)
            for m in self.modalities})
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(self.out_dim))

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.zero_filled(x)
        product = None
        for m in self.modalities:
            per_rank = torch.einsum("bi,rio->rbo", with_one(x[m]), self.factors[m])  # (r, B, o)
            product = per_rank if product is None else product * per_rank
        return torch.einsum("r,rbo->bo", self.rank_weights, product) + self.bias
