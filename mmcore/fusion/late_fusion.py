"""Late fusion in the shared space: one head scores every modality, log-probabilities are summed.

A product of experts: p(y | image, text) ~ p(y | image) * p(y | text)^w. Because the modalities
share one space, a single head serves them all. Each modality is trained on its own loss, and the
weights w are fitted on the validation split (`calibrate`), so a noisy modality counts only as
much as it earns. Concatenation, by contrast, learns from train-split image embeddings that the
image encoder already separates perfectly, and so learns to ignore the text.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


class LateFusionClassifier(nn.Module):
    """dict[modality, (B, d)] -> (B, n_classes) summed log-probabilities."""

    def __init__(self, modalities: list[str], dim: int, n_classes: int, hidden: int,
                 dropout: float = 0.1):
        super().__init__()
        self.modalities = sorted(modalities)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_classes))
        self.register_buffer("weights", torch.ones(len(self.modalities)))

    def per_modality(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.head(x[m]) for m in self.modalities])  # (M, B, n_classes)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        log_probs = F.log_softmax(self.per_modality(x), dim=2)
        return (self.weights[:, None, None] * log_probs).sum(dim=0)

    def loss(self, x: dict[str, torch.Tensor], labels: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's own cross-entropy (so each expert is calibrated on its own), and the
        fused output."""
        logits = self.per_modality(x)
        fused = (self.weights[:, None, None] * F.log_softmax(logits, dim=2)).sum(dim=0)
        return sum(F.cross_entropy(per, labels) for per in logits), fused

    @torch.no_grad()
    def calibrate(self, x: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """Pick the weights (first modality fixed at 1) with the best validation accuracy,
        ties broken by lower validation NLL."""
        log_probs = F.log_softmax(self.per_modality(x), dim=2)
        best = None
        for rest in itertools.product(WEIGHT_GRID, repeat=len(self.modalities) - 1):
            w = torch.tensor([1.0, *rest], device=log_probs.device)
            fused = (w[:, None, None] * log_probs).sum(0)
            acc = (fused.argmax(1) == labels).float().mean().item()
            nll = F.cross_entropy(fused, labels).item()
            if best is None or (acc, -nll) > (best[0], -best[1]):
                best = (acc, nll, w)
        self.weights.copy_(best[2])
        return {m: float(v) for m, v in zip(self.modalities, best[2].tolist(), strict=True)}
