"""The label-free cross-modal protocol, proved in both directions: in cross-modal A -> B learning
(image -> text, and text -> image), hide the label column from every B-side step (replace it with
a sentinel there) and every output stays bit-identical. A control shows the comparison can fail:
a step that does read labels changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
import torch

from mmcore.config import load_config
from mmcore.data.sources import open_source
from mmcore.inference import InferenceChain
from mmcore.learning_plan import space_of
from mmcore.stages.feature_extraction import (
    extract_label_free,
    extract_labelled,
    run_feature_extraction,
    train_encoder,
)
from mmcore.stages.preprocessing import run_preprocessing
from mmcore.stages.robustness_curves import curve_rows, robustness_curves
from mmcore.stages.shared_space import run_shared_space
from mmcore.stages.testing import run_testing
from mmcore.stages.training import run_training

# Tiny and short: bit-identity does not need a good model.
FAST = ["data.limit=200", "features.image_epochs=1", "features.text_epochs=2",
        "features.image_channels=8", "features.text_hidden=16", "features.image_dim=16",
        "features.text_dim=16", "shared_space.shared_dim=8", "training.hidden=16",
        "shared_space.epochs=2", "training.epochs=2", "training.mode=cross_modal"]
SENTINEL = 0  # a valid class: a step that read it would silently learn something else


def with_sentinel_labels(path: Path) -> None:
    """Overwrite a Parquet file's label column with the sentinel, keeping its schema (each part
    of a partitioned dataset folder)."""
    if path.is_dir():
        for part in sorted(path.glob("part-*.parquet")):
            with_sentinel_labels(part)
        return
    table = pq.read_table(path)
    labels = pa.array([SENTINEL] * table.num_rows, pa.int64())
    table = table.set_column(table.schema.get_field_index("label"),
                             table.schema.field("label"), labels)
    pq.write_table(table, path)


def stage_dirs(root: Path) -> dict[str, Path]:
    dirs = {n: root / n for n in ("features", "shared", "model", "test")}
    for d in dirs.values():
        d.mkdir(parents=True)
    return dirs


def train_then_test(cfg, samples: Path, dirs: dict[str, Path], names: list[str]) -> dict:
    modalities = ["image", "text"]
    run_training(dirs["shared"], modalities, len(names), cfg.training, cfg.seed, dirs["model"])
    chain = InferenceChain.from_stage_dirs(samples, dirs["features"], dirs["shared"],
                                           dirs["model"], cfg.features.model_dump(mode="json"))
    return run_testing(dirs["shared"], dirs["model"], modalities, names, dirs["test"], {},
                       chain=chain, samples_dir=samples, seed=cfg.seed)


def label_free_runs(root: Path, anchor: str, student: str, overrides: list[str]) -> dict:
    """Cross-modal anchor -> student run twice: as the pipeline runs it, and with the label
    column replaced by the sentinel in everything the student side reads."""
    cfg = load_config(overrides=[*FAST, f"training.modality={anchor}", *overrides])
    space = space_of(cfg.training)
    samples = root / "samples"
    samples.mkdir()
    run_preprocessing(open_source(cfg.data, cfg.seed), cfg.data, cfg.seed, samples, {})
    hidden_samples = root / "samples_sentinel"  # what every student-side step gets below
    shutil.copytree(samples, hidden_samples)
    for split in ("train", "val", "test"):
        with_sentinel_labels(hidden_samples / f"{split}.parquet")

    # As the pipeline runs it.
    honest = stage_dirs(root / "honest")
    feats = run_feature_extraction(samples, cfg.features, cfg.seed, honest["features"], {},
                                   space=space)
    names = feats["class_names"]
    run_shared_space(honest["features"], ["image", "text"], len(names), cfg.shared_space, cfg.seed,
               honest["shared"], {}, space=space)
    honest_result = train_then_test(cfg, samples, honest, names)

    # The same, with the label column hidden from every student-side step.
    hidden = stage_dirs(root / "hidden")
    _, teacher = extract_labelled(anchor, samples, cfg.features, cfg.seed, hidden["features"],
                                  {})
    extract_label_free(student, hidden_samples, teacher, anchor, cfg.features, cfg.seed,
                       hidden["features"], {})
    student_features = hidden["features"] / f"{student}.parquet"
    pristine = root / f"pristine_{student}.parquet"
    shutil.copytree(student_features, pristine)
    with_sentinel_labels(student_features)
    run_shared_space(hidden["features"], ["image", "text"], len(names), cfg.shared_space, cfg.seed,
               hidden["shared"], {}, space=space)
    shutil.rmtree(student_features)
    shutil.copytree(pristine, student_features)  # the dataset as written, to compare below
    with_sentinel_labels(hidden["shared"] / f"shared_{student}.parquet")
    hidden_result = train_then_test(cfg, hidden_samples, hidden, names)
    return {"cfg": cfg, "samples": samples, "hidden_samples": hidden_samples,
            "honest": (honest, honest_result), "hidden": (hidden, hidden_result)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    return label_free_runs(tmp_path_factory.mktemp("label_free"), "image", "text", [])


@pytest.fixture(scope="module")
def text_to_image_runs(tmp_path_factory) -> dict:
    """The other direction, with the text encoder that primes itself from labels (`nbbag`):
    its labelled side reads labels, the image side must not."""
    return label_free_runs(tmp_path_factory.mktemp("label_free_t2i"), "text", "image",
                           ["features.text_encoder=nbbag"])


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("direction", ["runs", "text_to_image_runs"])
def test_student_side_is_bit_identical_without_labels(direction, request):
    runs = request.getfixturevalue(direction)
    honest, honest_result = runs["honest"]
    hidden, hidden_result = runs["hidden"]
    for name in ("encoder_text.pt", "encoder_image.pt"):
        assert _same_weights(honest["features"] / name, hidden["features"] / name), name
    assert pq.read_table(honest["features"] / "text.parquet").equals(
        pq.read_table(hidden["features"] / "text.parquet"))
    assert _same_weights(honest["shared"] / "projections.pt", hidden["shared"] / "projections.pt")
    for name in ("shared_image.parquet", "shared_text.parquet"):
        a = pq.read_table(honest["shared"] / name).drop_columns(["label"])
        b = pq.read_table(hidden["shared"] / name).drop_columns(["label"])
        assert a.equals(b), name
    assert _same_weights(honest["model"] / "classifier.pt", hidden["model"] / "classifier.pt")
    assert pq.read_table(honest["test"] / "predictions.parquet").equals(
        pq.read_table(hidden["test"] / "predictions.parquet"))
    assert pq.read_table(honest["test"] / "robustness.parquet").equals(
        pq.read_table(hidden["test"] / "robustness.parquet"))
    assert honest_result["metrics"] == hidden_result["metrics"]


def test_text_side_files_carry_no_label(runs):
    honest, result = runs["honest"]
    features = pq.read_table(honest["features"] / "text.parquet")
    assert features.num_rows > 0 and features.column("label").null_count == features.num_rows
    assert pq.read_table(honest["shared"] / "shared_text.parquet").column("label").null_count > 0
    assert pq.read_table(honest["shared"] / "shared_image.parquet").column("label").null_count == 0
    plan = result["plan"]
    assert plan == {"mode": "cross_modal", "train": ["image"], "test": ["text"],
                    "space": "anchored:image", "labels_used": ["image"]}
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0


@pytest.mark.parametrize("direction, student", [("runs", "text"),
                                                ("text_to_image_runs", "image")])
def test_control_a_step_that_reads_labels_changes(direction, student, request):
    """The comparison above can fail: the student modality's encoder trained *with* labels
    differs when the labels are the sentinel."""
    runs = request.getfixturevalue(direction)
    cfg = runs["cfg"]
    from mmcore.io.parquet import read_metadata

    meta = read_metadata(runs["samples"] / "train.parquet")
    real = train_encoder(student, runs["samples"], cfg.features, cfg.seed, meta)
    fake = train_encoder(student, runs["hidden_samples"], cfg.features, cfg.seed, meta)
    assert not all(torch.equal(a, b) for a, b in zip(real.state_dict().values(),
                                                     fake.state_dict().values(), strict=True))


def test_robustness_curves_of_the_cross_modal_model(runs):
    """Every curve starts at the clean test accuracy; with the only input missing the model
    predicts the train split's most frequent class."""
    honest, result = runs["honest"]
    curves = pq.read_table(honest["test"] / "robustness.parquet").to_pandas()
    assert list(curves.columns) == ["modality", "corruption", "level_index", "level", "accuracy",
                                    "rows"]
    test_rows = pq.read_metadata(runs["samples"] / "test.parquet").num_rows
    assert (curves["rows"] == test_rows).all()  # below `testing.robustness_rows`: all of them
    assert set(curves["corruption"]) == {"token_dropout", "token_replacement", "missing"}
    assert set(curves["modality"]) == {"text"} and len(curves) == 3 * 11
    clean = curves[curves["level_index"] == 0]["accuracy"]
    assert (clean == result["metrics"]["accuracy"]).all()
    labels = pq.read_table(runs["samples"] / "test.parquet", columns=["label"]).column("label")
    train = pq.read_table(runs["samples"] / "train.parquet", columns=["label"]).column("label")
    majority = pa.compute.mode(train)[0]["mode"].as_py()
    share = sum(v == majority for v in labels.to_pylist()) / len(labels)
    gone = curves[(curves["corruption"] == "missing") & (curves["level_index"] == 10)]
    assert gone["accuracy"].item() == pytest.approx(share)
    series = result["robustness"]["series"]["robustness.text.token_dropout"]
    assert len(series) == 11 and series[0] == result["metrics"]["accuracy"]
    area = result["robustness"]["relative"]["robustness.text.token_dropout.relative"]
    assert 0.0 <= area <= 1.0


def test_capped_robustness_curves_use_that_many_rows_the_same_each_time(runs):
    """With a cap below the test split, the curves use exactly that many rows, chosen by sample
    id alone: the same on a rerun and whatever the rows' order."""
    honest, result = runs["honest"]
    cfg, samples = runs["cfg"], runs["samples"]
    ids = pq.read_table(samples / "test.parquet", columns=["id"]).column("id").to_pylist()
    cap = len(ids) // 2
    chosen = [ids[i] for i in curve_rows(ids, cap)]
    assert len(chosen) == cap
    assert sorted(ids[::-1][i] for i in curve_rows(ids[::-1], cap)) == sorted(chosen)
    chain = InferenceChain.from_stage_dirs(samples, honest["features"], honest["shared"],
                                           honest["model"], cfg.features.model_dump(mode="json"))
    predictions = pq.read_table(honest["test"] / "predictions.parquet").to_pandas()
    labels = predictions.set_index("id")["label"]
    capped = [robustness_curves(chain, samples, result["plan"], labels, 0, cfg.seed,
                                max_rows=cap) for _ in range(2)]
    assert (capped[0]["rows"] == cap).all()
    pd.testing.assert_frame_equal(capped[0], capped[1])
    whole = robustness_curves(chain, samples, result["plan"], labels, 0, cfg.seed, max_rows=None)
    clean = capped[0][capped[0]["level_index"] == 0]["accuracy"].iloc[0]
    right = predictions.set_index("id").loc[chosen]
    assert clean == pytest.approx((right["label"] == right["pred"]).mean())
    assert (whole["rows"] == len(ids)).all()
