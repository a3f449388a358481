"""A modality's encoder with its input layer and a linear head: what feature extraction trains on
each modality's own labels (the unimodal baseline), and what the registered model embeds with."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mmcore.config import FeaturesConfig
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


def load_encoder(model: EncoderClassifier, path: Path) -> None:
    """An encoder's weights from feature extraction, without its training head: the chain only
    embeds, and a label-free encoder's head (to the anchor's embedding width) has another shape."""
    state = {k: v for k, v in torch.load(path, weights_only=True).items()
             if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("head.") for k in missing):
        raise ValueError(f"{path}: not an encoder of this chain (missing {missing}, "
                         f"unexpected {unexpected})")
