"""Late fusion in the shared space: a product of experts over per-modality class scores.

p(y | image, text) ~ p(y | image) * p(y | text)^w. Because the modalities share one space, the
classifier's single head scores every modality (`FusionClassifier`); this operator combines the
scores. Each modality is trained on its own loss (`loss`), and the weights w are fitted on the
validation split (`calibrate`), so a noisy modality counts only as much as it earns.
Concatenation, by contrast, learns from train-split image embeddings that the image encoder
already separates perfectly, and so learns to ignore the text (docs/decisions.md).

A product of experts cannot represent interactions between modalities (an XOR of one bit from
each is beyond it); the feature-level operators can.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from mmcore.fusion.fusion_operator import FusionOperator

WEIGHT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


class LateFusion(FusionOperator):
    """dict[modality, (B, C) class scores] -> (B, C): the weighted sum of log-probabilities.

    Decision-level (`fuses_predictions`): the classifier builds it with dim = C (n_classes) and
    feeds it its head's scores of each modality. The weights are a buffer: saved with the model,
    fitted by `calibrate`, never trained.

    Missing modality: its expert is dropped (the product of the experts present). If every
    present expert has weight 0, they count with weight 1: a weight fitted beside a stronger
    modality says nothing about a modality left alone.
    """

    fuses_predictions = True

    def __init__(self, modalities: list[str], dim: int):
        super().__init__(modalities, dim)
        self.register_buffer("weights", torch.ones(len(self.modalities)))

    def _weights(self, present: list[str]) -> torch.Tensor:
        weights = self.weights[[self.modalities.index(m) for m in present]]
        if len(present) < len(self.modalities) and not bool(weights.any()):
            weights = torch.ones_like(weights)
        return weights

    def _combine(self, scores: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The present modalities' scores stacked (P, B, C), and their weighted fusion (B, C)."""
        present = self.present(scores)
        stacked = torch.stack([scores[m] for m in present])
        weights = self._weights(present)
        return stacked, (weights[:, None, None] * F.log_softmax(stacked, dim=2)).sum(dim=0)

    def forward(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._combine(scores)[1]

    def loss(self, scores: dict[str, torch.Tensor], labels: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each modality's own cross-entropy (so each expert is calibrated on its own), and the
        fused output."""
        stacked, fused = self._combine(scores)
        return sum(F.cross_entropy(per, labels) for per in stacked), fused

    @torch.no_grad()
    def calibrate(self, scores: dict[str, torch.Tensor], labels: torch.Tensor,
                  ) -> dict[str, float]:
        """Pick the weights (first modality fixed at 1) with the best validation accuracy, ties
        broken by lower validation NLL. Needs every modality."""
        missing = [m for m in self.modalities if m not in scores]
        if missing:
            raise ValueError(f"late fusion calibration needs every modality; missing {missing}")
        log_probs = F.log_softmax(torch.stack([scores[m] for m in self.modalities]), dim=2)
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
