"""The classifier a learning mode trains on shared embeddings: a fusion operator and an MLP head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.config import TrainingConfig
from mmcore.fusion.fusion_operator import FusionOperator
from mmcore.fusion.operators import fusion_class
from mmcore.fusion.select_fusion import SelectFusion


class FusionClassifier(nn.Module):
    """dict[modality, shared embedding] -> class logits: a fusion operator and an MLP head.

    Feature-level operators fuse the embeddings and the head reads the fused vector. A
    decision-level operator (`fuses_predictions`, late fusion) is fed the head's scores of each
    modality instead, so one head serves every modality; it then owns the loss and `calibrate`.
    Modalities missing from the input are left to the operator (mmcore/fusion/fusion_operator.py).
    """

    def __init__(self, fusion: FusionOperator, dim: int, n_classes: int, hidden: int,
                 dropout: float = 0.1, modality_dropout: float = 0.0):
        super().__init__()
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        head_in = dim if fusion.fuses_predictions else fusion.out_dim
        self.head = nn.Sequential(nn.Linear(head_in, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def fusion_inputs(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the operator reads: its modalities present in `x` (embeddings, or the head's
        scores of each for a decision-level operator), modality dropout while training."""
        x = {m: x[m] for m in self.fusion.modalities if m in x}
        if self.fusion.fuses_predictions:
            return {m: self.head(v) for m, v in x.items()}
        if self.training and self.modality_dropout > 0 and len(x) > 1:
            x = drop_modalities(x, self.modality_dropout)
        return x

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        fused = self.fusion(self.fusion_inputs(x))
        return fused if self.fusion.fuses_predictions else self.head(fused)

    def loss(self, x: dict[str, torch.Tensor], labels: torch.Tensor,
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and the logits; a decision-level operator defines its own loss."""
        if self.fusion.fuses_predictions:
            return self.fusion.loss(self.fusion_inputs(x), labels)
        logits = self(x)
        return F.cross_entropy(logits, labels), logits

    @torch.no_grad()
    def calibrate(self, x: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """Fit the operator's validation-fitted parameters (late fusion: the modality weights)."""
        return self.fusion.calibrate(self.fusion_inputs(x), labels)


def drop_modalities(x: dict[str, torch.Tensor], p: float) -> dict[str, torch.Tensor]:
    """Zero one random modality per sample with probability p, so that the head learns to use
    each modality (the encoders' train-split embeddings are near perfect for images, and a head
    trained on them would otherwise ignore the text)."""
    keys = sorted(x)
    first = next(iter(x.values()))
    batch, device = first.shape[0], first.device
    dropped = torch.where(torch.rand(batch, device=device) < p,
                          torch.randint(len(keys), (batch,), device=device), -1)
    return {k: x[k] * (dropped != i).unsqueeze(1).to(x[k].dtype) for i, k in enumerate(keys)}


def build_classifier(cfg: TrainingConfig, modalities: list[str], dim: int,
                     n_classes: int) -> FusionClassifier:
    """The model a learning mode trains: the modalities fused by the registry's operator
    `cfg.fusion`, or one selected modality."""
    if cfg.mode == "multimodal" and len(modalities) > 1:
        op = fusion_class(cfg.fusion)
        # a decision-level operator fuses the head's class scores, not the embeddings
        fusion = op(modalities, n_classes if op.fuses_predictions else dim)
    else:
        fusion = SelectFusion(cfg.modality if cfg.modality in modalities else modalities[0], dim)
    return FusionClassifier(fusion, dim, n_classes, cfg.hidden,
                            modality_dropout=cfg.modality_dropout)
