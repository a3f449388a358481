"""One small training loop for every learned part (encoders, projections, classifier).

It knows nothing about logging: callers pass `on_epoch_end(epoch, metrics)` (the tasks plug
MLflow into it) and `on_progress(Progress)` (the tasks turn it into terminal and Prefect log
lines), as minGPT's trainer takes callbacks.

Schedules: `cosine` anneals over `epochs`; `onecycle` warms up, then anneals, per step (it needs
the number of steps per epoch: `steps_per_epoch`, or `len(batches)`). With `patience`, training
stops once `select_best` has not improved for that many epochs.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

# loss_fn(model, batch) -> (loss, {"correct": ..., "count": ...} or {})
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
Schedule = Literal["cosine", "onecycle", "constant"]
# Fewer steps than this and `onecycle` runs at a constant rate: torch's OneCycleLR divides by
# zero when its warm-up ends on step 0 (4 steps at pct_start 0.25), and a cycle of a few steps
# has no warm-up to speak of.
ONECYCLE_MIN_STEPS = 8


@dataclass(frozen=True)
class Progress:
    """Where a `fit` call stands; passed to `on_progress` every few seconds and per epoch."""

    epoch: int  # 0-based
    epochs: int
    step: int  # batches done in this epoch
    steps: int | None  # batches per epoch, when known
    rows: int  # rows done in this epoch
    rows_per_s: float  # this epoch so far
    elapsed_s: float  # since fit started
    eta_s: float | None  # to the last epoch (early stopping may end sooner); None if unknown
    done: bool = False  # the epoch just ended

    def line(self) -> str:
        """A one-line summary for a log: 'epoch 2/4  310/797 batches  1,520 rows/s  ~1m05s left'."""
        of = f"/{self.steps}" if self.steps else ""
        left = f"  ~{_clock(self.eta_s)} left" if self.eta_s is not None else ""
        state = "done" if self.done else f"{self.step}{of} batches"
        return (f"epoch {self.epoch + 1}/{self.epochs}  {state}  "
                f"{self.rows_per_s:,.0f} rows/s{left}")


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def resolve_device(name: str) -> torch.device:
    """The configured device: `auto` is CUDA when torch sees one, else CPU; `cuda` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA device; use device=cpu or auto")
    return torch.device(name)


def to_device(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str,
                                                                                torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def seed_everything(seed: int) -> None:
    """Same seed, same numbers on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, lr: float, epochs: int,
               steps_per_epoch: int | None):
    """(scheduler, steps per epoch or None); `per_step` schedulers step after every batch."""
    if schedule == "onecycle":
        if not steps_per_epoch:
            raise ValueError("schedule=onecycle needs steps_per_epoch (or batches with len())")
        total = epochs * steps_per_epoch
        if total < ONECYCLE_MIN_STEPS:  # too short to warm up and anneal: a constant rate
            return None
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total, pct_start=0.25)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return None


class _Meter:
    """Rows and batches per epoch, and when to call `on_progress` again."""

    def __init__(self, epochs: int, steps: int | None, every_s: float,
                 callback: Callable[[Progress], None] | None):
        self.epochs, self.steps, self.every_s, self.callback = epochs, steps, every_s, callback
        self.start = time.perf_counter()
        self.epoch_seconds: list[float] = []

    def begin(self, epoch: int) -> None:
        self.epoch, self.step, self.rows = epoch, 0, 0
        self.epoch_start = self.last = time.perf_counter()

    def batch(self, rows: int) -> None:
        self.step, self.rows = self.step + 1, self.rows + rows
        if self.callback is not None and time.perf_counter() - self.last >= self.every_s:
            self.last = time.perf_counter()
            self.callback(self._progress(done=False))

    def end(self) -> None:
        self.epoch_seconds.append(time.perf_counter() - self.epoch_start)
        if self.steps is None:
            self.steps = self.step  # every epoch draws the same batches
        if self.callback is not None:
            self.callback(self._progress(done=True))

    def _progress(self, done: bool) -> Progress:
        now = time.perf_counter()
        in_epoch = now - self.epoch_start
        rate = self.rows / in_epoch if in_epoch > 0 else 0.0
        return Progress(self.epoch, self.epochs, self.step, self.steps, self.rows, rate,
                        now - self.start, self._eta(in_epoch, done), done)

    def _eta(self, in_epoch: float, done: bool) -> float | None:
        left_epochs = self.epochs - self.epoch - 1
        if self.epoch_seconds and done:
            return float(np.median(self.epoch_seconds)) * left_epochs
        per_epoch = (float(np.median(self.epoch_seconds)) if self.epoch_seconds else
                     in_epoch * self.steps / self.step if self.steps and self.step else None)
        if per_epoch is None:
            return None
        return max(per_epoch - in_epoch, 0.0) + per_epoch * left_epochs


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
    schedule: Schedule = "cosine",
    steps_per_epoch: int | None = None,
    patience: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every_s: float = 10.0,
    loss_name: str = "loss",
) -> list[dict[str, float]]:
    """Train with AdamW and `schedule`; return per-epoch metrics.

    `loss_fn(model, batch)` returns (loss, stats). The epoch's mean loss is recorded as
    `train_<loss_name>`: name it for what it measures (`nll`, `pair_l2`), so that a `val_` metric
    of the same name is the same measure. In stats, `count` is the batch's rows (default 1),
    `correct` its right answers (-> `train_acc`), and any other entry a sum over the batch's rows
    recorded as a per-row mean, `train_<entry>` (a second measure beside the optimised one).

    `on_epoch_end(epoch, record)` gets each epoch's record with the epoch counted from 1 (as
    `Progress.line` shows it, and so MLflow's steps and `mmcore.metrics.best_epoch`).

    `batches(epoch)` yields dicts of tensors (reshuffled per epoch), moved to `device` here. With
    `select_best`, the weights of the epoch with the highest `evaluate(model)[select_best]` are
    restored at the end, and `patience` stops training after that many epochs without a new
    best. The model is left on `device`.
    """
    model.to(device)
    if steps_per_epoch is None and hasattr(batches, "__len__"):
        steps_per_epoch = len(batches)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = _scheduler(optimizer, schedule, lr, epochs, steps_per_epoch)
    per_step = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    meter = _Meter(epochs, steps_per_epoch, progress_every_s, on_progress)
    history: list[dict[str, float]] = []
    best_score, best_state, since_best = -math.inf, None, 0
    for epoch in range(epochs):
        model.train()
        meter.begin(epoch)
        total, seen, correct, counted = 0.0, 0, 0.0, 0
        sums: dict[str, float] = {}
        for batch in batches(epoch):
            loss, stats = loss_fn(model, to_device(batch, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if per_step and scheduler.last_epoch < scheduler.total_steps:
                scheduler.step()
            n = int(stats.get("count", 1))
            total += loss.item() * n
            seen += n
            correct += stats.get("correct", 0.0)
            counted += n if "correct" in stats else 0
            for key, value in stats.items():
                if key not in ("count", "correct"):
                    sums[key] = sums.get(key, 0.0) + value
            meter.batch(n)
        if scheduler is not None and not per_step:
            scheduler.step()
        record = {f"train_{loss_name}": total / max(seen, 1)}
        record |= {f"train_{k}": v / max(seen, 1) for k, v in sums.items() if k != loss_name}
        if counted:
            record["train_acc"] = correct / counted
        if evaluate is not None:
            model.eval()
            with torch.no_grad():
                record.update(evaluate(model))
        history.append(record)
        meter.end()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)  # counted from 1, as the terminal counts them
        if select_best and record[select_best] > best_score:
            best_score, best_state = record[select_best], copy.deepcopy(model.state_dict())
            since_best = 0
        elif select_best:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history
