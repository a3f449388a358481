"""`training.finetune`: the classifier trained end to end with its encoders. A real pipeline run
(Prefect flow, MLflow in SQLite) on a slice of the built-in digits, read back: the training stage
leaves changed encoder weights and re-embedded shared files, testing scores those, and the logged
model (which carries the fine-tuned encoders) answers raw rows as testing did."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from raw_rows import load_model, raw_test_rows

from mmcore.config import ConfigError, TrainingConfig, load_config
from mmcore.io.parquet import read_embeddings
from mmcore.stages.training import run_training

SETTINGS = ["data.limit=400", "features.image_epochs=2", "features.text_epochs=2",
            "shared_space.epochs=2", "training.epochs=2", "training.finetune=true",
            "training.corruption_copies=0", "testing.robustness=false", "drift.enabled=false"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, prefect_harness) -> tuple[dict, list[str]]:
    from flows.pipeline import pipeline

    overrides = [*SETTINGS, f"run_dir={tmp_path_factory.mktemp('finetune')}"]
    return pipeline(overrides=overrides), overrides


def _stage(summary: dict, stage: str) -> Path:
    return Path(summary["stages"][stage]["path"])


@pytest.mark.slow
def test_finetuning_changes_the_encoders_and_projections(finetuned):
    summary, _ = finetuned
    training, features = _stage(summary, "training"), _stage(summary, "feature_extraction")
    for name, before in [("encoder_image.pt", features), ("encoder_text.pt", features),
                         ("projections.pt", _stage(summary, "shared_space"))]:
        tuned = torch.load(training / name, weights_only=True)
        start = torch.load(before / name, weights_only=True)
        assert not any(k.startswith("head.") for k in tuned)  # the probe is not trained on
        changed = [k for k in tuned if not torch.equal(tuned[k], start[k])]
        assert changed, f"{name}: fine-tuning left every weight as it was"


@pytest.mark.slow
def test_testing_scores_the_reembedded_rows(finetuned):
    summary, _ = finetuned
    training, shared = _stage(summary, "training"), _stage(summary, "shared_space")
    for m in ("image", "text"):
        tuned, frozen = (read_embeddings(d / f"shared_{m}.parquet") for d in (training, shared))
        for column in ("id", "split", "label"):
            assert np.array_equal(tuned[column], frozen[column])
        assert not np.allclose(tuned["embedding"], frozen["embedding"])
    predictions = pq.read_table(_stage(summary, "testing") / "predictions.parquet")
    assert predictions.num_rows == int((tuned["split"] == "test").sum())


@pytest.mark.slow
def test_the_logged_model_reproduces_the_testing_stage(finetuned):
    summary, overrides = finetuned
    cfg = load_config(None, overrides)
    rows, expected = raw_test_rows(cfg, _stage(summary, "preprocessing"),
                                   _stage(summary, "testing"), ["image", "text"])
    model = load_model(f"sqlite:///{Path(cfg.run_dir) / 'mlflow.db'}",
                       "models:/mmpipe-classifier@champion")
    assert np.allclose(model.predict(rows).to_numpy(), expected, atol=1e-4)


def test_cross_modal_cannot_finetune():
    with pytest.raises(ConfigError, match="finetune"):
        load_config(None, ["training.mode=cross_modal", "training.finetune=true"])


@pytest.mark.parametrize("setting, window, message", [
    ({"corruption_copies": 2}, None, "corruption_copies=0"),
    ({"corruption_copies": 0}, {"some-id"}, "window=all"),
])
def test_finetuning_refuses_what_it_would_ignore(tmp_path, setting, window, message):
    cfg = TrainingConfig(finetune=True, **setting)
    with pytest.raises(ValueError, match=message):
        run_training(tmp_path, ["image", "text"], 10, cfg, 0, tmp_path, window=window,
                     finetune=lambda on_epoch: None)
