"""Testing: the trained classifier on the held-out test split -> metrics, plots, predictions, and
robustness curves (each test modality corrupted at increasing levels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mmcore.metrics import classification_metrics, plot_confusion
from mmcore.parquet_io import embedding_array, write_table
from mmcore.stages.training import labels_of, load_classifier, load_shared, predict_proba


def check_labels_used(plan: dict[str, Any]) -> None:
    """A cross-modal result that used its test modality's labels anywhere is not cross-modal."""
    leaked = sorted(set(plan["test"]) & set(plan["labels_used"]))
    if plan["mode"] == "cross_modal" and leaked:
        raise ValueError(f"cross-modal test on {plan['test']} used the labels of {leaked}: "
                         "that is not cross-modal learning")


def run_testing(shared_dir: Path, training_dir: Path, modalities: list[str],
                class_names: list[str], out_dir: Path, file_meta: dict[str, Any],
                chain: Any | None = None, samples_dir: Path | None = None, seed: int = 0,
                ) -> dict[str, Any]:
    """Write `predictions.parquet` (id, label, pred, probs) and the confusion matrix PNG; with
    the inference `chain` and the samples, also `robustness.parquet` and its PNG."""
    model, spec = load_classifier(training_dir)
    plan = spec["plan"]
    check_labels_used(plan)
    shared = load_shared(shared_dir, modalities)
    probs, labels = predict_proba(model, shared, plan, "test")
    preds = probs.argmax(1)
    first = next(iter(shared.values()))
    rows = np.flatnonzero(first["split"] == "test")
    table = pa.table({
        "id": pa.array(first["id"][rows], pa.string()),
        "label": pa.array(labels, pa.int64()),
        "pred": pa.array(preds, pa.int64()),
        "probs": embedding_array(probs),
    })
    write_table(out_dir / "predictions.parquet", table, {**file_meta, "plan": plan})
    metrics = classification_metrics(labels, preds, len(class_names))
    title = f"{plan['mode']}: train {'+'.join(plan['train'])}, test {'+'.join(plan['test'])}"
    plot_confusion(labels, preds, class_names, out_dir / "confusion.png", title)
    result: dict[str, Any] = {"plan": plan, "metrics": metrics}
    if chain is not None and samples_dir is not None:
        result["robustness"] = _robustness(chain, samples_dir, plan, shared, first, rows, labels,
                                           seed, out_dir, file_meta, title)
    return result


def _robustness(chain, samples_dir, plan, shared, first, rows, labels, seed, out_dir,
                file_meta, title) -> dict[str, Any]:
    from mmcore.stages.robustness_curves import (
        plot_robustness,
        robustness_curves,
        robustness_metrics,
    )

    train = first["split"] == "train"
    fallback = int(np.bincount(labels_of(shared, plan)[train]).argmax())
    curves = robustness_curves(chain, samples_dir, plan,
                               pd.Series(labels, index=first["id"][rows]), fallback, seed)
    write_table(out_dir / "robustness.parquet", pa.Table.from_pandas(curves, preserve_index=False),
                {**file_meta, "plan": plan})
    plot_robustness(curves, out_dir / "robustness.png", title)
    series, areas = robustness_metrics(curves)
    return {"series": series, "relative": areas}
