"""Robustness at test time: the trained chain's accuracy when one test modality is corrupted, at
each level of `mmcore.robustness.LEVELS`, for each corruption of that modality.

The corruption acts on the stored test samples (pixels on the unit scale, token ids), which then
go through the same encoder, projection and classifier as the clean ones. `missing` removes the
modality from a `level` share of the rows: the fusion operator then works without it (each
operator's rule, `mmcore/fusion/`); a model with no other input predicts the train split's most
frequent class.

On large splits the curves use a fixed subset of at most `ROBUSTNESS_ROWS` rows (`curve_rows`):
each point re-embeds the rows, 11 levels x every corruption, and a few thousand rows already
measure each point to well under a point of accuracy (docs/learning-modes.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from mmcore.config import TestingConfig
from mmcore.data.id_hash import id_draws
from mmcore.fusion.fusion_classifier import BLANK, EVIDENCE
from mmcore.io.parquet import embedding_array, read_metadata, to_matrix
from mmcore.modalities import MODALITIES
from mmcore.robustness import (
    CORRUPTIONS,
    IMAGE_CORRUPTIONS,
    LEVELS,
    TEXT_CORRUPTIONS,
    Ragged,
    missing_rows,
    relative_robustness,
)
from mmcore.stages.training import labels_of, load_shared

COLUMNS = ["modality", "corruption", "level_index", "level", "accuracy", "rows"]
# Rows the curves use at most: the standard error of an accuracy near 0.9 on 2,000 rows is
# sqrt(0.9 * 0.1 / 2000) = 0.7 points, and a paired comparison of two models on the same rows
# is tighter still. The default of `testing.robustness_rows` (the test curves' cap); also the
# cap of `val_robustness` (the tuner's objective, part of training, not of testing's config).
ROBUSTNESS_ROWS = TestingConfig.model_fields["robustness_rows"].default
# Salt of the rows' draw: not the run's seed, so every model, operator and seed of a comparison
# is measured on the same rows.
_ROWS_SALT = "robustness-curves:"


def _corrupt_images(column: pa.Array, name: str, level: float, seed: int,
                    meta: dict[str, Any]) -> pa.Array:
    pixels = to_matrix(column).reshape(-1, *meta["image_shape"])
    out = IMAGE_CORRUPTIONS[name](pixels, level, seed)
    return embedding_array(out.reshape(len(out), -1))


def _corrupt_tokens(column: pa.Array, name: str, level: float, seed: int,
                    meta: dict[str, Any]) -> pa.Array:
    texts = Ragged(column.values.to_numpy(zero_copy_only=False).astype(np.int64),
                   column.offsets.to_numpy().astype(np.int64))
    fn = TEXT_CORRUPTIONS[name]
    out = (fn(texts, level, seed, meta["vocab_size"]) if name == "token_replacement"
           else fn(texts, level, seed))
    return pa.ListArray.from_arrays(pa.array(out.offsets, pa.int32()),
                                    pa.array(out.values, pa.int32()))


# modality -> (stored column, how a corruption of that modality rewrites it)
COLUMN_CORRUPTERS = {"image": ("image", _corrupt_images), "text": ("tokens", _corrupt_tokens)}


class _Evaluator:
    """The chain's pieces applied to stored test samples, and the classifier on a dict of them."""

    def __init__(self, chain: torch.nn.Module, plan: dict[str, Any], meta: dict[str, Any]):
        self.chain, self.plan, self.meta = chain, plan, meta

    def embed(self, modality: str, table: pa.Table) -> dict[str, torch.Tensor]:
        """The modality's shared embeddings and its blank rows (`InferenceChain.embed`)."""
        return self.chain.embed(modality, MODALITIES[modality].from_table(table, self.meta))

    @torch.no_grad()
    def predict(self, z: dict[str, torch.Tensor], n: int, fallback: int) -> np.ndarray:
        """Predicted classes of n rows from the test modalities present in `z` (renamed to the
        train modalities, as for cross-modal models); `fallback` when none is."""
        inputs = self.chain.as_trained(z)
        if not inputs:
            return np.full(n, fallback, dtype=np.int64)
        return self.chain.classifier(inputs).argmax(1).numpy()


def _missing_accuracy(ev: _Evaluator, clean: dict[str, torch.Tensor], modality: str,
                      level: float, seed: int, labels: np.ndarray, fallback: int) -> float:
    lost = missing_rows(len(labels), level, seed)
    preds = np.empty(len(labels), dtype=np.int64)
    if (~lost).any():
        preds[~lost] = ev.predict({m: v[~lost] for m, v in clean.items()}, int((~lost).sum()),
                                  fallback)
    if lost.any():
        rest = {m: v[lost] for m, v in clean.items()
                if m not in (modality, BLANK + modality, EVIDENCE + modality)}
        preds[lost] = ev.predict(rest, int(lost.sum()), fallback)
    return float((preds == labels).mean())


def curve_rows(ids: list[str], max_rows: int | None) -> np.ndarray:
    """Positions (in order) of the rows the curves use: all of them when there are at most
    `max_rows` (or no cap), else the `max_rows` whose id draws lowest (`id_draws`): the same
    rows for every model of the same data, whichever order or seed."""
    if max_rows is None or len(ids) <= max_rows:
        return np.arange(len(ids))
    draws = id_draws(ids, _ROWS_SALT)
    return np.sort(np.argsort(draws, kind="stable")[:max_rows])


def robustness_curves(chain: torch.nn.Module, samples: Path, plan: dict[str, Any],
                      labels: pd.Series, fallback: int, seed: int, split: str = "test",
                      max_rows: int | None = ROBUSTNESS_ROWS) -> pd.DataFrame:
    """Accuracy per (test modality, corruption, level) on `split` (the test split; the val
    split for a robust tuning objective: `val_robustness`), on at most `max_rows` of its rows
    (`curve_rows`; None: all); column `rows` says how many.

    `labels`: the split's labels by sample id; `fallback`: the class predicted with no input
    left.
    """
    meta = read_metadata(samples / "train.parquet")
    columns = sorted({COLUMN_CORRUPTERS[m][0] for m in plan["test"]})
    table = pq.read_table(samples / f"{split}.parquet", columns=["id", *columns])
    table = table.take(curve_rows(table.column("id").to_pylist(), max_rows))
    truth = labels.loc[table.column("id").to_pylist()].to_numpy().astype(np.int64)
    ev = _Evaluator(chain.eval(), plan, meta)
    clean = {k: v for m in plan["test"] for k, v in ev.embed(m, table).items()}
    rows = []
    for modality in plan["test"]:
        column, corrupt = COLUMN_CORRUPTERS[modality]
        for name in CORRUPTIONS[modality]:
            for index, level in enumerate(LEVELS):
                if name == "missing":
                    acc = _missing_accuracy(ev, clean, modality, level, seed, truth, fallback)
                else:
                    changed = table.set_column(
                        table.schema.get_field_index(column), column,
                        corrupt(table.column(column).combine_chunks(), name, level, seed, meta))
                    preds = ev.predict({**clean, **ev.embed(modality, changed)},
                                       len(truth), fallback)
                    acc = float((preds == truth).mean())
                rows.append((modality, name, index, level, acc, len(truth)))
    return pd.DataFrame(rows, columns=COLUMNS)


def majority_class(labels: np.ndarray, split: np.ndarray) -> int:
    """The train split's most common label: the prediction when no input is left."""
    return int(np.bincount(labels[split == "train"]).argmax())


def val_robustness(chain: torch.nn.Module, samples: Path, shared_dir: Path,
                   plan: dict[str, Any], seed: int) -> dict[str, float]:
    """The robustness curves on the val split, as `mmpipe tune`'s robust objectives (never a
    test figure): `val_robust_mean`, the mean accuracy over every (modality, corruption, level)
    point, and `val_robust_worst`, the lowest point, on at most `ROBUSTNESS_ROWS` val rows.
    The labels come from the shared-space files in `shared_dir`, as the classifier's did."""
    shared = load_shared(shared_dir, plan["train"])
    split, ids = next(iter(shared.values()))["split"], next(iter(shared.values()))["id"]
    labels = labels_of(shared, plan)
    val = split == "val"
    accuracy = robustness_curves(chain, samples, plan, pd.Series(labels[val], index=ids[val]),
                                 majority_class(labels, split), seed, "val")["accuracy"]
    return {"val_robust_mean": float(accuracy.mean()), "val_robust_worst": float(accuracy.min())}


def robustness_metrics(curves: pd.DataFrame) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per curve `robustness.<modality>.<corruption>`: its accuracies in level order (MLflow
    steps 0..10), and its relative robustness (area under the curve)."""
    series, areas = {}, {}
    for (modality, name), curve in curves.groupby(["modality", "corruption"], sort=True):
        acc = curve.sort_values("level_index")["accuracy"].tolist()
        series[f"robustness.{modality}.{name}"] = acc
        areas[f"robustness.{modality}.{name}.relative"] = relative_robustness(acc)
    return series, areas


def plot_robustness_curves(curves: pd.DataFrame, path: Path, title: str) -> Path:
    """One model's accuracy against corruption level, one line per (modality, corruption)."""
    from mmcore.plotting import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(6, 4))
    for (modality, name), curve in curves.groupby(["modality", "corruption"], sort=True):
        curve = curve.sort_values("level")
        ax.plot(curve["level"], curve["accuracy"], marker="o", ms=3, label=f"{modality}: {name}")
    ax.set(xlabel="corruption level", ylabel="test accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
