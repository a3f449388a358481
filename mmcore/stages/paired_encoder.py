"""A label-free encoder: modality B learns from the pairs alone, from the class scores that A's
(supervised) encoder gives the paired row (cross-modal distillation, Gupta et al. 2016), through a
linear head h kept only for training. `features.distill` says how:

- `soft` (the default): h(E_B(x_B)) matches A's class probabilities softened by
  `features.distill_temperature`, each pair weighted by A's confidence
  (`mmcore.losses.soft_distillation_loss`);
- `l2`: h(E_B(x_B)) regresses A's scores, standardised per dimension,
  sum ||h(E_B(x_B)) - s_A(x_A)||^2.

The B side never reads the label column: batches are decoded from `id`, `split` and B's own
columns, the best epoch is chosen by the pair loss on val pairs, and B's features are written with
a null label. So B's encoder is the same whatever the labels are (tests/test_label_free.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from mmcore.config import FeaturesConfig
from mmcore.losses import l2_alignment_loss, soft_distillation_loss
from mmcore.modalities import MODALITIES
from mmcore.modalities.encoder_classifier import EncoderClassifier
from mmcore.training import ParquetBatches, fit, seed_everything, to_device
from mmcore.training.loop import Progress

Batch = dict[str, torch.Tensor]


def label_free_columns(modality: str) -> list[str]:
    """What a B-side step reads of the samples: never the label."""
    return ["id", "split", *MODALITIES[modality].columns]


def unit_scale(std: np.ndarray) -> np.ndarray:
    """Per-dimension scale for standardising: the std, or 1 where a dimension is (nearly)
    constant on train (a dead ReLU unit), which dividing by ~0 would blow up elsewhere."""
    return np.where(std > 1e-4, std, 1.0).astype(np.float32)


PairLoss = Callable[..., torch.Tensor]  # (B's head output, target, reduction=) -> loss


def pair_loss_for(cfg: FeaturesConfig) -> PairLoss:
    """The loss between B's head output and A's scores that `features.distill` names."""
    if cfg.distill == "l2":
        return l2_alignment_loss
    return lambda student, teacher, reduction="mean": soft_distillation_loss(
        student, teacher, cfg.distill_temperature, reduction)


class TeacherTargets:
    """A's class scores by row id: the target of B's paired row. For `l2` they are standardised
    per dimension with the train rows' statistics, so the target has unit scale whatever A's
    scale (a CE-trained encoder's scores reach norms of 20+, which a linear head on a GRU needs
    far more steps to reach than training has: B then learns only the mean). For `soft` they stay
    as they are: their softmax is the target."""

    def __init__(self, teacher: dict[str, Any], standardise: bool = True):
        self.index = pd.Index(teacher["id"])
        scores = teacher["embedding"]
        if standardise:
            train = scores[teacher["split"] == "train"]
            scores = (scores - train.mean(axis=0)) / unit_scale(train.std(axis=0))
        self.embedding = scores.astype(np.float32)

    @classmethod
    def for_config(cls, teacher: dict[str, Any], cfg: FeaturesConfig) -> TeacherTargets:
        return cls(teacher, standardise=cfg.distill == "l2")

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    def __call__(self, ids: pa.ChunkedArray | pa.Array) -> torch.Tensor:
        rows = self.index.get_indexer(np.asarray(ids.to_pylist(), dtype=object))
        if (rows < 0).any():
            raise ValueError("a row of the student modality has no teacher embedding (ids differ)")
        return torch.from_numpy(self.embedding[rows])


def _decoder(modality: str, meta: dict[str, Any], targets: TeacherTargets,
             ) -> Callable[[pa.Table], Batch]:
    spec = MODALITIES[modality]

    def decode(table: pa.Table) -> Batch:
        return {"target": targets(table.column("id")), **spec.from_table(table, meta)}
    return decode


def mean_pair_loss(model: EncoderClassifier, batches: ParquetBatches, loss: PairLoss,
                   device: torch.device | str) -> float:
    """The mean per-pair loss between B's head output and A's scores over `batches`."""
    total, count = 0.0, 0
    model.to(device).eval()
    with torch.no_grad():
        for batch in batches():
            batch = to_device(batch, device)
            total += loss(model(batch), batch["target"], reduction="sum").item()
            count += len(batch["target"])
    return total / max(count, 1)


def pair_loss_on(model: EncoderClassifier, samples: Path, split: str, teacher: dict[str, Any],
                 meta: dict[str, Any], cfg: FeaturesConfig) -> float:
    """`mean_pair_loss` over one split of the samples."""
    decode = _decoder(model.modality, meta, TeacherTargets.for_config(teacher, cfg))
    batches = ParquetBatches(samples / f"{split}.parquet", label_free_columns(model.modality),
                             decode, 1024, shuffle=False)
    return mean_pair_loss(model, batches, pair_loss_for(cfg), next(model.parameters()).device)


def train_paired_encoder(modality: str, samples: Path, teacher: dict[str, Any],
                         cfg: FeaturesConfig, seed: int, meta: dict[str, Any],
                         on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
                         device: torch.device | str = "cpu",
                         on_progress: Callable[[str, Progress], None] | None = None,
                         ) -> EncoderClassifier:
    """B's encoder (with a linear head to A's score width) trained on train pairs to match A's
    class scores (`features.distill`); the epoch with the lowest val pair loss is kept."""
    seed_everything(seed)
    targets = TeacherTargets.for_config(teacher, cfg)
    loss = pair_loss_for(cfg)
    model = EncoderClassifier(modality, cfg, meta, targets.dim)  # head: -> A's embedding
    decode = _decoder(modality, meta, targets)
    columns = label_free_columns(modality)
    train = ParquetBatches(samples / "train.parquet", columns, decode, cfg.batch_size,
                           shuffle=True, seed=seed)
    val = ParquetBatches(samples / "val.parquet", columns, decode, 1024, shuffle=False)

    def evaluate(m: EncoderClassifier) -> dict[str, float]:
        value = mean_pair_loss(m, val, loss, device)
        return {"val_pair_loss": value, "val_pair_score": -value}

    def pair_loss(m: EncoderClassifier, batch: Batch):
        return loss(m(batch), batch["target"]), {"count": len(batch["target"])}

    # The same schedule as the labelled encoders (mmcore.stages.feature_extraction).
    spec = MODALITIES[modality]
    epochs = cfg.resolve_epochs(spec.epochs(cfg), len(train), spec.step_budget(cfg))
    fit(model, train, pair_loss, epochs=epochs, lr=cfg.lr, evaluate=evaluate,
        select_best="val_pair_score", device=device, schedule=cfg.schedule,
        patience=cfg.patience, loss_name=f"pair_{cfg.distill}",
        on_epoch_end=(lambda e, r: on_epoch(modality, e, r)) if on_epoch else None,
        on_progress=(lambda p: on_progress(modality, p)) if on_progress else None)
    return model
