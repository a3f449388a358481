"""A label-free encoder: modality B learns from the pairs alone, by regressing the embedding that
A's (supervised) encoder gives the paired row, sum ||h(E_B(x_B)) - E_A(x_A)||^2 (A's embedding
standardised per dimension), where h is a linear head kept only for training (cross-modal
distillation, Gupta et al. 2016).

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
from mmcore.losses import l2_alignment_loss
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


class TeacherTargets:
    """A's embeddings by row id, standardised per dimension with the train rows' statistics: the
    regression target of B's paired row. Standardised, the target has unit scale whatever A's
    embedding scale (a CE-trained encoder's embeddings reach norms of 20+, which a linear head on
    a GRU needs far more steps to reach than training has: B then learns only the mean)."""

    def __init__(self, teacher: dict[str, Any]):
        self.index = pd.Index(teacher["id"])
        train = teacher["embedding"][teacher["split"] == "train"]
        mean, std = train.mean(axis=0), unit_scale(train.std(axis=0))
        self.embedding = ((teacher["embedding"] - mean) / std).astype(np.float32)

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


def _pair_loss(model: EncoderClassifier, batch: Batch):
    loss = l2_alignment_loss(model(batch), batch["target"])
    return loss, {"count": len(batch["target"])}


def mean_pair_loss(model: EncoderClassifier, batches: ParquetBatches,
                   device: torch.device | str) -> float:
    """Mean squared distance between B's predicted and A's actual embedding over `batches`."""
    total, count = 0.0, 0
    model.to(device).eval()
    with torch.no_grad():
        for batch in batches():
            batch = to_device(batch, device)
            total += l2_alignment_loss(model(batch), batch["target"], reduction="sum").item()
            count += len(batch["target"])
    return total / max(count, 1)


def pair_loss_on(model: EncoderClassifier, samples: Path, split: str, teacher: dict[str, Any],
                 meta: dict[str, Any]) -> float:
    """`mean_pair_loss` over one split of the samples."""
    decode = _decoder(model.modality, meta, TeacherTargets(teacher))
    batches = ParquetBatches(samples / f"{split}.parquet", label_free_columns(model.modality),
                             decode, 1024, shuffle=False)
    return mean_pair_loss(model, batches, next(model.parameters()).device)


def train_paired_encoder(modality: str, samples: Path, teacher: dict[str, Any],
                         cfg: FeaturesConfig, seed: int, meta: dict[str, Any],
                         on_epoch: Callable[[str, int, dict[str, float]], None] | None = None,
                         device: torch.device | str = "cpu",
                         on_progress: Callable[[str, Progress], None] | None = None,
                         ) -> EncoderClassifier:
    """B's encoder (with a linear head to A's embedding width) trained on train pairs to predict
    A's embedding; the epoch with the lowest val pair loss is kept."""
    seed_everything(seed)
    targets = TeacherTargets(teacher)
    model = EncoderClassifier(modality, cfg, meta, targets.dim)  # head: -> A's embedding
    decode = _decoder(modality, meta, targets)
    columns = label_free_columns(modality)
    train = ParquetBatches(samples / "train.parquet", columns, decode, cfg.batch_size,
                           shuffle=True, seed=seed)
    val = ParquetBatches(samples / "val.parquet", columns, decode, 1024, shuffle=False)

    def evaluate(m: EncoderClassifier) -> dict[str, float]:
        loss = mean_pair_loss(m, val, device)
        return {"val_pair_l2": loss, "val_pair_score": -loss}

    # The same schedule as the labelled encoders (mmcore.stages.feature_extraction).
    epochs = cfg.resolve_epochs(MODALITIES[modality].epochs(cfg), len(train))
    fit(model, train, _pair_loss, epochs=epochs, lr=cfg.lr, evaluate=evaluate,
        select_best="val_pair_score", device=device, schedule=cfg.schedule,
        patience=cfg.patience, loss_name="pair_l2",
        on_epoch_end=(lambda e, r: on_epoch(modality, e, r)) if on_epoch else None,
        on_progress=(lambda p: on_progress(modality, p)) if on_progress else None)
    return model
