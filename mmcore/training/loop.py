"""One small training loop for every learned part (encoders, projections, classifier).

It knows nothing about logging: callers pass `on_epoch_end(epoch, metrics)` (the tasks plug
MLflow into it), as minGPT's trainer takes callbacks.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

# loss_fn(model, batch) -> (loss, {"correct": ..., "count": ...} or {})
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


def resolve_device(name: str) -> torch.device:
    """The configured device, or a clear error when it is not there."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device; use device=cpu")
    return torch.device(name)


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str,
                                                                                torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def seed_everything(seed: int) -> None:
    """Same seed, same numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def fit(
    model: nn.Module,
    batches: Callable[[int], Iterable[Any]],
    loss_fn: LossFn,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 1e-4,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    select_best: str | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, float]]:
    """Train with AdamW and a cosine schedule; return per-epoch metrics.

    `batches(epoch)` yields dicts of tensors (reshuffled per epoch), moved to `device` here. With
    `select_best`, the weights of the epoch with the highest `evaluate(model)[select_best]` are
    restored at the end. The model is left on `device`.
    """
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    history: list[dict[str, float]] = []
    best_score, best_state = -float("inf"), None
    for epoch in range(epochs):
        model.train()
        total, seen, correct, counted = 0.0, 0, 0.0, 0
        for batch in batches(epoch):
            loss, stats = loss_fn(model, to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = int(stats.get("count", 1))
            total += loss.item() * n
            seen += n
            correct += stats.get("correct", 0.0)
            counted += n if "correct" in stats else 0
        schedule.step()
        record = {"train_loss": total / max(seen, 1)}
        if counted:
            record["train_acc"] = correct / counted
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                record.update(evaluate(model))
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if select_best and record[select_best] > best_score:
            best_score, best_state = record[select_best], copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
