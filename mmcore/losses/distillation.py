"""Soft-label distillation (Hinton et al. 2015) for a label-free student: match the teacher's
class probabilities softened by a temperature, each pair weighted by the teacher's confidence."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                           reduction: str = "mean") -> torch.Tensor:
    """(B, C) student and teacher class scores -> T^2 * cross-entropy between the softened
    distributions, each pair weighted by the teacher's top probability (at T = 1).

    Why weighted: a paired text that names no digit ("a scanned digit") has a flat teacher
    distribution, and an image student that matched it would learn that some images carry no
    class. Weighting by confidence lets such pairs count little, without reading any label."""
    target = F.softmax(teacher / temperature, dim=1)
    per_pair = -(target * F.log_softmax(student / temperature, dim=1)).sum(dim=1)
    weight = F.softmax(teacher, dim=1).amax(dim=1)
    weighted = per_pair * weight * temperature ** 2
    return weighted.sum() if reduction == "sum" else weighted.mean()
