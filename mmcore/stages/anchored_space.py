"""The anchored shared space of label-free cross-modal learning (`mmcore.learning_plan`).

1. Anchor side, with A's labels: A's projection P_A and the shared classifier, trained on A's
   rows alone by the class term (best val accuracy on A kept). Nothing of B is involved, so this
   side is also the whole of unimodal A.
2. Student side, label-free: A is frozen and P_B learns to land where A's paired row lands,
   sum ||P_B(f_B) - P_A(f_A)||^2 (`shared_space.loss=l2`) or InfoNCE against the fixed P_A(f_A)
   (`infonce`); the epoch with the lowest val pair loss is kept. It reads no label.

Both live in one `SharedSpace` module (same state dict as the joint space), so the registered
inference chain loads either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcore.config import SharedSpaceConfig
from mmcore.losses import info_nce_loss, l2_alignment_loss
from mmcore.stages.paired_encoder import unit_scale
from mmcore.training import ArrayBatches, fit, seed_everything

OnEpoch = Callable[[int, dict[str, float]], None]


class _AnchorSide(nn.Module):
    """P_A and the shared classifier (the very modules of the SharedSpace, not copies)."""

    def __init__(self, head: nn.Module, classifier: nn.Module):
        super().__init__()
        self.head, self.classifier = head, classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(x))


def _anchor_loss(model: _AnchorSide, batch: dict[str, torch.Tensor]):
    logits = model(batch["x"])
    correct = (logits.argmax(1) == batch["label"]).sum().item()
    return F.cross_entropy(logits, batch["label"]), {"correct": correct,
                                                     "count": len(batch["label"])}


def _pair_loss(cfg: SharedSpaceConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if cfg.loss == "l2":
        return l2_alignment_loss
    return lambda a, b: info_nce_loss(a, b, cfg.temperature)


def _apply(module: nn.Module, x: np.ndarray) -> np.ndarray:
    device = next(module.parameters()).device
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x).to(device)).cpu().numpy()


def fit_anchor_side(space: nn.Module, anchor: str, embedding: np.ndarray, labels: np.ndarray,
                    split: np.ndarray, cfg: SharedSpaceConfig, seed: int, device: torch.device,
                    on_epoch: OnEpoch | None = None) -> list[dict[str, float]]:
    """Train P_A and the classifier of `space` on A's train rows with A's labels."""
    seed_everything(seed)
    side = _AnchorSide(space.heads[anchor], space.classifier)
    train, val = split == "train", split == "val"

    def evaluate(m: _AnchorSide) -> dict[str, float]:
        return {"val_acc": float((_apply(m, embedding[val]).argmax(1) == labels[val]).mean())}

    batches = ArrayBatches({"x": embedding[train], "label": labels[train]}, cfg.batch_size,
                           seed=seed)
    return fit(side, batches, _anchor_loss, epochs=cfg.epochs, lr=cfg.lr, evaluate=evaluate,
               select_best="val_acc", on_epoch_end=on_epoch, device=device, loss_name="nll")


def fit_student_side(space: nn.Module, student: str, embedding: np.ndarray, target: np.ndarray,
                     split: np.ndarray, cfg: SharedSpaceConfig, seed: int, device: torch.device,
                     on_epoch: OnEpoch | None = None) -> list[dict[str, float]]:
    """Train P_B of `space` to map B's features onto A's fixed shared embeddings (`target`) of
    the same rows. Label-free: it is given no label.

    The target is standardised per dimension (train rows) while P_B learns, and the
    standardisation is folded into P_B's last layer afterwards, so P_B lands in A's coordinates:
    A's class-trained embeddings have a scale that P_B would otherwise need far more steps to
    reach."""
    seed_everything(seed)
    head = space.heads[student]
    loss = _pair_loss(cfg)
    train, val = split == "train", split == "val"
    mean, std = target[train].mean(axis=0), unit_scale(target[train].std(axis=0))
    scaled = ((target - mean) / std).astype(np.float32)

    def loss_fn(m: nn.Module, batch: dict[str, torch.Tensor]):
        return loss(m(batch["x"]), batch["target"]), {"count": len(batch["x"])}

    def evaluate(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            value = loss(torch.from_numpy(_apply(m, embedding[val])),
                         torch.from_numpy(scaled[val])).item()
        return {f"val_pair_{cfg.loss}": value, "val_pair_score": -value}

    batches = ArrayBatches({"x": embedding[train], "target": scaled[train]}, cfg.batch_size,
                           seed=seed)
    history = fit(head, batches, loss_fn, epochs=cfg.epochs, lr=cfg.lr, evaluate=evaluate,
                  select_best="val_pair_score", device=device, loss_name=f"pair_{cfg.loss}",
                  on_epoch_end=(lambda e, r: on_epoch(e, {f"{student}.{k}": v
                                                          for k, v in r.items()}))
                  if on_epoch else None)
    _fold_scale(head, mean, std)
    return history


@torch.no_grad()
def _fold_scale(head: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
    """head(x) -> head(x) * std + mean, by rewriting its last linear layer."""
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    s = torch.from_numpy(std).to(last.weight)
    last.weight.mul_(s[:, None])
    last.bias.mul_(s).add_(torch.from_numpy(mean).to(last.bias))


def project(space: nn.Module, feats: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """Every row of every modality in the shared space."""
    return {m: _apply(space.heads[m], f["embedding"]) for m, f in feats.items()}
