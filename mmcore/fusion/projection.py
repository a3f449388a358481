"""Projection head: one modality's embedding -> the shared space."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """(B, d_in) -> (B, d_shared), a two-layer MLP."""

    def __init__(self, d_in: int, d_shared: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(d_in, d_shared)
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_shared))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
