"""Every source runs the whole pipeline from config alone: image-only MNIST-format files,
text-only IMDB reviews, MNIST with generated texts, MNIST+IMDB paired by label, a manifest. For
each, the registered model on raw test rows reproduces the testing stage's predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from data_factories import write_idx_mnist, write_image_manifest, write_imdb
from raw_rows import load_model, raw_test_rows

from mmcore.config import load_config

TINY = ["features.image_epochs=1", "features.text_epochs=1", "shared_space.epochs=2",
        "training.epochs=2", "features.image_channels=4", "training.register_model=true"]


def run(tmp_path: Path, *overrides: str) -> dict:
    from flows.pipeline import pipeline

    return pipeline(overrides=[*TINY, f"run_dir={tmp_path / 'run'}", *overrides])


def outputs(summary: dict, stage: str) -> Path:
    return Path(summary["stages"][stage]["path"])


def quality(summary: dict) -> dict:
    return json.loads((outputs(summary, "preprocessing") / "quality.json").read_text())


def model(summary: dict, tmp_path: Path, name: str):
    return load_model(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}", f"models:/{name}@champion")


def assert_model_reproduces_testing(summary: dict, tmp_path: Path, name: str,
                                    *overrides: str) -> None:
    """No train/serve skew: the registered model, given the test rows exactly as the source
    yields them (pixels on the source's own scale, raw text), predicts what the testing stage
    predicted from the stored samples."""
    cfg = load_config(overrides=[*TINY, f"run_dir={tmp_path / 'run'}", *overrides])
    frame, expected = raw_test_rows(cfg, outputs(summary, "preprocessing"),
                                    outputs(summary, "testing"), summary["plan"]["test"])
    probs = model(summary, tmp_path, name).predict(frame).to_numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)


@pytest.fixture
def mnist_dir(tmp_path) -> tuple[Path, dict]:
    return tmp_path / "mnist", write_idx_mnist(tmp_path / "mnist", 300, 80, gz=True, size=12)


def test_mnist_image_only_runs_as_unimodal_image_learning(tmp_path, mnist_dir, prefect_harness):
    folder, written = mnist_dir
    summary = run(tmp_path, "data.source=mnist", f"data.path={folder}", "name=mnist",
                  "training.model_name=mnist-model")
    q = quality(summary)
    assert q["rows_in"] == 380 == q["rows_kept"] + q["rows_rejected"]
    assert q["splits"]["test"] == 80  # the t10k files stay the test split
    assert sorted(p.name for p in outputs(summary, "feature_extraction").glob("*.parquet")) == \
        ["image.parquet"]
    assert summary["plan"] == {"mode": "unimodal", "train": ["image"], "test": ["image"],
                               "space": "joint", "labels_used": ["image"]}
    shared = pq.read_table(outputs(summary, "shared_space") / "shared_image.parquet")
    assert shared.schema.field("embedding").type.list_size == 64  # pass-through: encoder dim
    images, _ = written["test"]
    out = model(summary, tmp_path, "mnist-model").predict(
        pd.DataFrame({"image": list(images[:5].astype(np.float64))}))
    assert out.shape == (5, 10) and np.allclose(out.sum(axis=1), 1, atol=1e-4)
    assert_model_reproduces_testing(summary, tmp_path, "mnist-model", "data.source=mnist",
                                    f"data.path={folder}", "name=mnist",
                                    "training.model_name=mnist-model")


def test_imdb_text_only_runs_as_unimodal_text_learning(tmp_path, prefect_harness):
    root = write_imdb(tmp_path / "imdb", per_class=12)
    summary = run(tmp_path, "data.source=imdb", f"data.path={root}", "name=imdb",
                  "training.model_name=imdb-model")
    assert summary["plan"] == {"mode": "unimodal", "train": ["text"], "test": ["text"],
                               "space": "joint", "labels_used": ["text"]}
    q = quality(summary)
    assert q["rows_in"] == 48 and q["splits"]["test"] == 24
    texts = pq.read_table(outputs(summary, "preprocessing") / "train.parquet").column("text")
    assert not any("<br" in t for t in texts.to_pylist())
    out = model(summary, tmp_path, "imdb-model").predict(
        pd.DataFrame({"text": ["A great film.", "An awful film."]}))
    assert list(out.columns) == ["neg", "pos"]
    assert_model_reproduces_testing(summary, tmp_path, "imdb-model", "data.source=imdb",
                                    f"data.path={root}", "name=imdb",
                                    "training.model_name=imdb-model")


def test_mnist_with_generated_texts_is_multimodal(tmp_path, mnist_dir, prefect_harness):
    folder, _ = mnist_dir
    summary = run(tmp_path, "data.source=mnist", f"data.path={folder}", "data.text=generated",
                  "name=mnist-text", "training.model_name=mnist-text-model")
    assert summary["plan"]["mode"] == "multimodal"
    sample = pq.read_table(outputs(summary, "preprocessing") / "test.parquet").slice(0, 3)
    assert all(isinstance(t, str) and t for t in sample.column("text").to_pylist())
    assert_model_reproduces_testing(summary, tmp_path, "mnist-text-model", "data.source=mnist",
                                    f"data.path={folder}", "data.text=generated",
                                    "name=mnist-text", "training.model_name=mnist-text-model")


def test_mnist_paired_with_imdb_by_label_map(tmp_path, mnist_dir, prefect_harness):
    folder, written = mnist_dir
    root = write_imdb(tmp_path / "imdb", per_class=30)
    summary = run(tmp_path, "data.source=paired", "name=paired",
                  "training.model_name=paired-model",
                  f"data.pair={{images: {{source: mnist, path: {folder}}}, "
                  f"texts: {{source: imdb, path: {root}}}, label_map: {{0: 0, 1: 1}}}}")
    q = quality(summary)
    kept_classes = set(q["classes"]["train"])
    assert kept_classes == {"0", "1"}
    labels = np.concatenate([written["train"][1], written["test"][1]])
    assert int(q["source_notes"]["image_rows_outside_label_map"]) == int((labels > 1).sum())
    assert q["rows_in"] == int((labels <= 1).sum())
    ids = pq.read_table(outputs(summary, "preprocessing") / "train.parquet").column("id")
    assert all("|" in i for i in ids.to_pylist())
    assert_model_reproduces_testing(
        summary, tmp_path, "paired-model", "data.source=paired", "name=paired",
        "training.model_name=paired-model",
        f"data.pair={{images: {{source: mnist, path: {folder}}}, "
        f"texts: {{source: imdb, path: {root}}}, label_map: {{0: 0, 1: 1}}}}")


def test_manifest_with_images_and_texts(tmp_path, prefect_harness):
    path, rows = write_image_manifest(tmp_path / "manifest", 60, rgb=True, size=8)
    summary = run(tmp_path, "data.source=manifest", f"data.path={path}", "data.image_mode=RGB",
                  "name=manifest", "training.model_name=manifest-model")
    meta = pq.read_schema(outputs(summary, "preprocessing") / "train.parquet").metadata
    assert json.loads(meta[b"mmpipe"])["image_shape"] == [3, 8, 8]
    assert summary["plan"]["mode"] == "multimodal"
    assert quality(summary)["rows_kept"] == 60
    assert_model_reproduces_testing(summary, tmp_path, "manifest-model", "data.source=manifest",
                                    f"data.path={path}", "data.image_mode=RGB", "name=manifest",
                                    "training.model_name=manifest-model")
