"""The test rows as people would send them to the registered model, with what the testing stage
predicted for them: for tests that check the model has no train/serve skew."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mmcore.config import PipelineConfig
from mmcore.data.sources import open_source
from mmcore.io.parquet import read_metadata, to_matrix
from tasks.tracking.logged_model import import_path_kept
from tasks.tracking.runs import using_tracking_uri


def load_model(tracking_uri: str, model_uri: str):
    """The registered model, loaded in this process as a user would; `sys.path` is kept (see
    `import_path_kept`)."""
    with using_tracking_uri(tracking_uri), import_path_kept():
        return mlflow.pyfunc.load_model(model_uri)


def raw_test_rows(cfg: PipelineConfig, preprocessing: Path, testing: Path,
                  modalities: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows the testing stage scored, exactly as the source yields them (pixels on the
    source's own scale as H x W or C x H x W arrays, raw text), one column per modality in
    `modalities`; and the testing stage's probabilities for them, in the same order.
    `preprocessing` and `testing`: those stages' output folders."""
    predictions = pq.read_table(testing / "predictions.parquet")
    expected = dict(zip(predictions.column("id").to_pylist(),
                        to_matrix(predictions.column("probs")), strict=True))
    meta = read_metadata(preprocessing / "train.parquet")
    c, h, w = meta["image_shape"] or (1, 0, 0)
    rows: dict[str, list] = {"id": [], "image": [], "text": []}
    for batch in open_source(cfg.data, cfg.seed).batches(256):
        for row in batch.to_pylist():
            if row["id"] in expected:
                rows["id"].append(row["id"])
                if row["image"] is not None:
                    pixels = np.asarray(row["image"]) * meta["pixel_max"]
                    rows["image"].append(pixels.reshape((h, w) if c == 1 else (c, h, w)))
                rows["text"].append(row["text"])
    assert len(rows["id"]) == len(expected)
    frame = pd.DataFrame({m: rows[m] for m in modalities})
    return frame, np.stack([expected[i] for i in rows["id"]])
