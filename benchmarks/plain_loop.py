"""The training loop of the plain references: tensors in memory, AdamW, one-cycle, no framework.

Shared by `plain_image.py` and `plain_text.py`. After each epoch it scores the test split and
records the seconds spent so far *training* (data loading before the loop is timed by the
caller; the per-epoch test scoring is measurement, not work, and is not counted), so a
time-to-accuracy is: load seconds + training seconds up to the first epoch at the target.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Inputs = dict[str, torch.Tensor]


def batches(inputs: Inputs, batch_size: int, order: torch.Tensor | None = None):
    n = len(next(iter(inputs.values())))
    order = torch.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield {k: v[idx] for k, v in inputs.items()}


def accuracy(model: nn.Module, forward: Callable[[nn.Module, Inputs], torch.Tensor],
             data: Inputs, batch_size: int = 1024) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in batches(data, batch_size):
            correct += (forward(model, batch).argmax(1) == batch["label"]).sum().item()
    return correct / len(data["label"])


def train(model: nn.Module, forward: Callable[[nn.Module, Inputs], torch.Tensor],
          train_data: Inputs, test_data: Inputs, *, epochs: int, batch_size: int = 128,
          lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0,
          log: Callable[[str], None] = print) -> list[dict[str, float]]:
    """AdamW + one-cycle over `epochs`; per epoch: train seconds so far and test accuracy."""
    torch.manual_seed(seed)
    n = len(train_data["label"])
    steps = epochs * -(-n // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    history, trained = [], 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        for batch in batches(train_data, batch_size, order):
            loss = F.cross_entropy(forward(model, batch), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        trained += time.perf_counter() - start
        acc = accuracy(model, forward, test_data)
        history.append({"epoch": epoch + 1, "train_s": round(trained, 2),
                        "test_acc": round(acc, 4)})
        log(f"  epoch {epoch + 1}/{epochs}: test acc {acc:.4f}, trained {trained:.1f} s")
    return history


def time_to(history: list[dict[str, float]], target: float, load_s: float) -> float | None:
    """Seconds (load + training) until the first epoch whose test accuracy reaches target."""
    for record in history:
        if record["test_acc"] >= target:
            return round(load_s + record["train_s"], 2)
    return None
