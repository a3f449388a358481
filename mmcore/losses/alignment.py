"""L2 alignment (the classic formulation) and symmetric InfoNCE (contrastive) between modalities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def l2_alignment_loss(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """sum_i ||a_i - b_i||^2 over paired rows ("mean" divides by the number of pairs)."""
    per_pair = (a - b).pow(2).sum(dim=1)  # (B,)
    return per_pair.sum() if reduction == "sum" else per_pair.mean()


def info_nce_loss(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): row i of `a` must pick row i of `b` among the batch, and back."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature  # (B, B)
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class L2AlignmentLoss(nn.Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return l2_alignment_loss(a, b, self.reduction)


class InfoNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return info_nce_loss(a, b, self.temperature)
