"""Testing: the trained classifier on the held-out test split -> metrics, plots, predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmcore.metrics import classification_metrics, plot_confusion
from mmcore.parquet_io import embedding_array, write_table
from mmcore.stages.training import load_classifier, load_shared, predict_proba


def run_testing(shared_dir: Path, training_dir: Path, modalities: list[str],
                class_names: list[str], out_dir: Path, file_meta: dict[str, Any],
                ) -> dict[str, Any]:
    """Write `predictions.parquet` (id, label, pred, probs) and the confusion matrix PNG."""
    model, spec = load_classifier(training_dir)
    plan = spec["plan"]
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
    return {"plan": plan, "metrics": metrics}
