"""Testing: the trained classifier on the held-out test split -> metrics, plots, predictions, and
robustness curves (each test modality corrupted at increasing levels).

Predictions are a partitioned dataset, `predictions.parquet/part-NNNNN.parquet`, one part per
`part_rows` test rows (`mmcore/io/partitions.py`); each part needs only the stage's input folders,
so parts can run in other processes (on Dask). The metrics are computed from the parts read back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mmcore.io.parquet import embedding_array, read_dataset, write_table
from mmcore.io.partitions import MapParts, one_thread, run_inline
from mmcore.learning_plan import mode_label
from mmcore.metrics import classification_metrics, plot_confusion
from mmcore.stages.corruption_augment import add_evidence
from mmcore.stages.training import labels_of, load_classifier, load_shared, predict_proba


def check_labels_used(plan: dict[str, Any]) -> None:
    """A cross-modal result that used its test modality's labels anywhere is not cross-modal."""
    leaked = sorted(set(plan["test"]) & set(plan["labels_used"]))
    if plan["mode"] == "cross_modal" and leaked:
        raise ValueError(f"cross-modal test on {plan['test']} used the labels of {leaked}: "
                         "that is not cross-modal learning")


def prediction_jobs(shared_dir: Path, training_dir: Path, modalities: list[str],
                    test_rows: int, part_rows: int, file_meta: dict[str, Any],
                    samples_dir: Path | None = None) -> list[dict[str, Any]]:
    """One job per `part_rows` test rows, in row order."""
    return [{"shared_dir": str(shared_dir), "training_dir": str(training_dir),
             "samples_dir": None if samples_dir is None else str(samples_dir),
             "modalities": modalities, "start": start, "stop": min(start + part_rows, test_rows),
             "meta": file_meta} for start in range(0, max(test_rows, 1), part_rows)]


def predict_part(out: Path, meta: dict[str, Any], shared_dir: str, training_dir: str,
                 modalities: list[str], start: int, stop: int,
                 samples_dir: str | None = None) -> None:
    """The classifier's predictions for test rows [start, stop) into the part file `out`
    (id, label, pred, probs), written atomically. A classifier whose confidence gates read the
    raw input's evidence gets it from the stored samples in `samples_dir`."""
    model, spec = load_classifier(Path(training_dir))
    shared = load_shared(Path(shared_dir), modalities)
    rows = np.flatnonzero(next(iter(shared.values()))["split"] == "test")[start:stop]
    part = {m: {k: v[rows] for k, v in columns.items()} for m, columns in shared.items()}
    if spec.get("evidence_dims"):
        if samples_dir is None:
            raise ValueError(f"{training_dir}: its confidence gates read the samples' evidence; "
                             "no samples folder given")
        add_evidence(Path(samples_dir), part, splits=("test",))
    with one_thread():
        probs, labels = predict_proba(model, part, spec["plan"], "test")
    write_table(out, pa.table({
        "id": pa.array(part[modalities[0]]["id"], pa.string()),
        "label": pa.array(labels, pa.int64()),
        "pred": pa.array(probs.argmax(1), pa.int64()),
        "probs": embedding_array(probs),
    }), meta)


def _digest(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()[:16]


def run_testing(shared_dir: Path, training_dir: Path, modalities: list[str],
                class_names: list[str], out_dir: Path, file_meta: dict[str, Any],
                chain: Any | None = None, samples_dir: Path | None = None, seed: int = 0,
                part_rows: int = 8192, map_parts: MapParts | None = None,
                robustness_rows: int | None = None) -> dict[str, Any]:
    """Write the dataset `predictions.parquet/` (id, label, pred, probs; parts of `part_rows`
    test rows through `map_parts`, default one after another here) and the confusion matrix
    PNG; with the inference `chain` and the samples, also `robustness.parquet` and its PNG, on
    at most `robustness_rows` test rows (None: all)."""
    _, spec = load_classifier(training_dir)
    plan = spec["plan"]
    check_labels_used(plan)
    shared = load_shared(shared_dir, modalities)
    first = next(iter(shared.values()))
    rows = np.flatnonzero(first["split"] == "test")
    jobs = prediction_jobs(shared_dir, training_dir, modalities, len(rows), part_rows,
                           {**file_meta, "plan": plan}, samples_dir)
    predictions = (map_parts or run_inline(out_dir))(
        "predictions.parquet", predict_part, jobs, _digest(training_dir / "classifier.pt"))
    table = read_dataset(predictions, columns=["id", "label", "pred"])
    if table.column("id").to_pylist() != list(first["id"][rows]):
        raise ValueError(f"{predictions}: its parts do not hold the test rows in order")
    labels, preds = table.column("label").to_numpy(), table.column("pred").to_numpy()
    metrics = classification_metrics(labels, preds, len(class_names))
    title = mode_label(plan["mode"], plan["train"], plan["test"],
                       spec["training"]["fusion"] if plan["mode"] == "multimodal" else None)
    plot_confusion(labels, preds, class_names, out_dir / "confusion.png", title)
    result: dict[str, Any] = {"plan": plan, "metrics": metrics}
    if chain is not None and samples_dir is not None:
        result["robustness"] = _robustness(chain, samples_dir, plan, shared, first, rows, labels,
                                           seed, out_dir, file_meta, title, robustness_rows)
    return result


def _robustness(chain, samples_dir, plan, shared, first, rows, labels, seed, out_dir,
                file_meta, title, max_rows) -> dict[str, Any]:
    from mmcore.stages.robustness_curves import (
        majority_class,
        plot_robustness_curves,
        robustness_curves,
        robustness_metrics,
    )

    fallback = majority_class(labels_of(shared, plan), first["split"])
    curves = robustness_curves(chain, samples_dir, plan,
                               pd.Series(labels, index=first["id"][rows]), fallback, seed,
                               max_rows=max_rows)
    write_table(out_dir / "robustness.parquet", pa.Table.from_pandas(curves, preserve_index=False),
                {**file_meta, "plan": plan})
    plot_robustness_curves(curves, out_dir / "robustness.png", title)
    series, areas = robustness_metrics(curves)
    return {"series": series, "relative": areas, "rows": int(curves["rows"].iloc[0])}
