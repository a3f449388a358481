"""Builders that put encoders, projections, fusion and heads together."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmcore.config import FeaturesConfig, TrainingConfig
from mmcore.fusion import FUSIONS, LateFusionClassifier, SelectFusion
from mmcore.modalities import MODALITIES


class EncoderClassifier(nn.Module):
    """A modality's input layer and encoder with a linear head, trained on its own modality (the
    unimodal baseline). `embed` is what feature extraction and the registered model run."""

    def __init__(self, modality: str, cfg: FeaturesConfig, meta: dict, n_classes: int):
        super().__init__()
        self.modality = modality
        spec = MODALITIES[modality]
        self.prepare = spec.input_layer(meta)
        self.encoder = spec.build_encoder(cfg, meta)
        self.head = nn.Linear(self.encoder.dim, n_classes)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return MODALITIES[self.modality].embed(self.encoder, self.prepare(batch))  # (B, dim)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(batch))  # (B, n_classes)


class FusionClassifier(nn.Module):
    """dict[modality, shared embedding] -> class logits: a fusion operator, then an MLP head."""

    def __init__(self, fusion: nn.Module, n_classes: int, hidden: int, dropout: float = 0.1,
                 modality_dropout: float = 0.0):
        super().__init__()
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        self.head = nn.Sequential(nn.Linear(fusion.out_dim, hidden), nn.ReLU(),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def loss(self, x: dict[str, torch.Tensor], labels: torch.Tensor):
        logits = self(x)
        return F.cross_entropy(logits, labels), logits

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        x = {m: x[m] for m in self.fusion.modalities}
        if self.training and self.modality_dropout > 0 and len(x) > 1:
            x = drop_modalities(x, self.modality_dropout)
        return self.head(self.fusion(x))


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
                     n_classes: int) -> nn.Module:
    """The model a learning mode trains: fused modalities, or one selected modality."""
    if cfg.mode == "multimodal" and len(modalities) > 1 and cfg.fusion == "late":
        return LateFusionClassifier(modalities, dim, n_classes, cfg.hidden)
    if cfg.mode == "multimodal" and len(modalities) > 1:
        fusion = FUSIONS[cfg.fusion](modalities, dim)
    else:
        fusion = SelectFusion(cfg.modality if cfg.modality in modalities else modalities[0], dim)
    return FusionClassifier(fusion, n_classes, cfg.hidden, modality_dropout=cfg.modality_dropout)


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """The loss_fn of `fit` for classifiers: the model's own `loss` if it has one, else
    cross-entropy on batch["label"]."""
    labels = batch["label"]
    if hasattr(model, "loss"):
        loss, logits = model.loss(batch, labels)
    else:
        logits = model(batch)
        loss = F.cross_entropy(logits, labels)
    correct = (logits.argmax(dim=1) == labels).sum().item()
    return loss, {"correct": correct, "count": len(labels)}
