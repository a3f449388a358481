"""Cross-entropy for classifiers, in the form the training loop takes (`fit`'s loss_fn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]):
    """The loss_fn of `fit` for classifiers: the model's own `loss` if it has one, else
    cross-entropy on batch["label"]. Its stats carry `nll`, the summed NLL of the model's
    output: the loss itself for a plain classifier, a different measure for late fusion, which
    trains on the sum of its experts' NLLs but outputs their fused prediction."""
    labels = batch["label"]
    if hasattr(model, "loss"):
        loss, logits = model.loss(batch, labels)
    else:
        logits = model(batch)
        loss = F.cross_entropy(logits, labels)
    correct = (logits.argmax(dim=1) == labels).sum().item()
    nll = F.cross_entropy(logits.detach(), labels, reduction="sum").item()
    return loss, {"correct": correct, "count": len(labels), "nll": nll}


def classification_loss_name(model: nn.Module) -> str:
    """What `classification_loss` optimises for `model`, as `fit`'s loss_name: `expert_nll_sum`
    for a decision-level fusion (each modality's own NLL, summed), else `nll`."""
    fusion = getattr(model, "fusion", None)
    return "expert_nll_sum" if getattr(fusion, "fuses_predictions", False) else "nll"
