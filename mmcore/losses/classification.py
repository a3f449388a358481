"""Cross-entropy for classifiers, in the form the training loop takes (`fit`'s loss_fn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
