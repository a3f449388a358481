"""Data that arrives in batches (docs/batches.md): batch folders from `mmpipe data batches`,
per-batch caching by content, frozen reference transforms and their out-of-vocabulary rate,
stable hash splits, immutable batches, and the training window, through real Prefect flows,
real MLflow and the Parquet files read back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from flows.cli.commands import main, report
from mmcore.config import load_config
from mmcore.data.batches import list_batches, read_batch
from mmcore.data.source import DataError
from mmcore.stages.batched_preprocessing import run_batched_preprocessing

TINY = ["features.image_epochs=1", "features.text_epochs=1", "shared_space.epochs=2",
        "training.epochs=2", "features.image_channels=4", "testing.robustness=false",
        "data.source=manifest", "data.batched=true", "data.limit=150"]


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    """Three batches of the built-in digits, the third with texts from another vocabulary."""
    out = tmp_path_factory.mktemp("stream") / "batches"
    assert main(["data", "batches", "--out", str(out), "--batches", "3", "--shift-from", "3",
                 "--shift", "vocab", "--shift-size", "0.8"]) == 0
    return out


def _folder_with(stream: Path, tmp_path: Path, count: int) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for batch in list_batches(stream)[:count]:
        if not (data / batch.name).exists():
            shutil.copytree(batch.path, data / batch.name)
    return data


def _preprocess(data: Path, tmp_path: Path, name: str) -> tuple[Path, dict]:
    cfg = load_config(overrides=[f"data.path={data}", *TINY[6:]])
    out = tmp_path / name
    out.mkdir()
    quality = run_batched_preprocessing(cfg.data, 0, out, {}, tmp_path / "cache", {})
    return out, quality


def _splits(folder: Path) -> dict[str, str]:
    rows = pq.read_table(folder, columns=["id", "split"]).to_pylist()
    return {r["id"]: r["split"] for r in rows}


def test_data_batches_writes_dated_manifests_with_the_shift(stream):
    batches = list_batches(stream)
    assert [b.name for b in batches] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    header = (batches[0].path / "manifest.csv").read_text().splitlines()[0]
    assert header == "id,label,image_path,text"
    texts = [(b.path / "manifest.csv").read_text() for b in batches]
    assert "escrito" not in texts[0] + texts[1] and texts[2].count("número") > 0


@pytest.mark.parametrize("shift", ["noise", "balance"])
def test_data_batches_injects_image_and_balance_shifts(tmp_path, shift):
    """From batch 2 on: noisier pixels, or no more than a trace of classes 5-9."""
    import pandas as pd
    from PIL import Image

    out = tmp_path / "batches"
    assert main(["data", "batches", "--out", str(out), "--batches", "2", "--shift-from", "2",
                 "--shift", shift, "--shift-size", "0.9"]) == 0
    frames = [pd.read_csv(b.path / "manifest.csv") for b in list_batches(out)]
    if shift == "balance":
        high = [float((f["label"] >= 5).mean()) for f in frames]
        assert high[1] < 0.2 < 0.4 < high[0]
        return
    folders = [b.path for b in list_batches(out)]
    spread = [np.mean([np.asarray(Image.open(folder / p), np.float32).std()
                       for p in frame["image_path"][:50]])
              for folder, frame in zip(folders, frames, strict=True)]
    assert spread[1] > spread[0] * 1.1


def test_adding_a_batch_keeps_old_splits_and_reuses_old_batches(stream, tmp_path):
    data = _folder_with(stream, tmp_path, 2)
    first, q1 = _preprocess(data, tmp_path, "first")
    built = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "batches").iterdir()}
    _folder_with(stream, tmp_path, 3)
    second, q2 = _preprocess(data, tmp_path, "second")

    before = {f"{s}": _splits(first / f"{s}.parquet") for s in ("train", "val", "test")}
    after = {f"{s}": _splits(second / f"{s}.parquet") for s in ("train", "val", "test")}
    for split, rows in before.items():
        assert rows.items() <= after[split].items()  # every old row, in the same split
    # the two old batches came from the per-batch cache, untouched; one folder is new
    now = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "batches").iterdir()}
    assert {p: now[p] for p in built} == built and len(now) == len(built) + 1
    assert q2["batches"]["all"] == [b.name for b in list_batches(data)]
    # every row says its batch, and one batch's rows can be read alone
    third = read_batch(second / "train.parquet", "2026-12-03", ["batch"])
    assert third.num_rows > 0 and set(third.column("batch").to_pylist()) == {"2026-12-03"}


def test_frozen_vocabulary_reports_the_out_of_vocabulary_rate(stream, tmp_path):
    _, quality = _preprocess(_folder_with(stream, tmp_path, 3), tmp_path, "out")
    oov = {name: batch["oov_rate"] for name, batch in quality["per_batch"].items()}
    assert quality["batches"]["reference"] == ["2026-12-01"]
    assert oov["2026-12-01"] == 0  # the vocabulary was fitted on it (train rows; val/test few)
    assert oov["2026-12-02"] < 0.05 < 0.3 < oov["2026-12-03"]


def _tags(run_dir: Path, stage: str | None = None) -> list[dict[str, str]]:
    """Tags of the MLflow runs (parents, or one stage's child runs), oldest first."""
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              order_by=["attributes.start_time ASC"])
    return [r.data.tags for r in runs
            if (r.data.tags.get("stage") == stage if stage
                else "mlflow.parentRunId" not in r.data.tags)]


def test_nights_ingest_only_new_batches(stream, tmp_path, prefect_harness):
    """Night 1: two batches; night 2: a third arrives and only it is preprocessed and embedded
    (the encoders stay frozen); a changed old batch is then an error naming it, accepted with
    --refresh preprocessing; a training window of the last batch is recorded."""
    from flows.pipeline import pipeline

    data = _folder_with(stream, tmp_path, 2)
    run_dir = tmp_path / "run"
    overrides = [*TINY, f"data.path={data}", f"run_dir={run_dir}"]
    night1 = pipeline(overrides=overrides)
    assert night1["batches"]["new"] == ["2026-12-01", "2026-12-02"]
    embeddings = run_dir / "batch-cache" / "feature_extraction"
    cached = {p: p.stat().st_mtime_ns for p in embeddings.rglob("embeddings/*.parquet")}

    _folder_with(stream, tmp_path, 3)
    night2 = pipeline(overrides=overrides)
    assert night2["batches"]["new"] == ["2026-12-03"]
    assert night2["stages"]["preprocessing"]["state"] == "miss"
    now = {p: p.stat().st_mtime_ns for p in embeddings.rglob("embeddings/*.parquet")}
    assert {p: now[p] for p in cached} == cached  # old batches' embeddings: reused as they were
    assert len(now) - len(cached) == len({p.name for p in now} - {p.name for p in cached}) > 0
    features = Path(night2["stages"]["feature_extraction"]["path"])
    assert set(pq.read_table(features / "image.parquet", columns=["batch"])
               .column("batch").to_pylist()) == {"2026-12-01", "2026-12-02", "2026-12-03"}
    fe_tags = _tags(run_dir, "feature_extraction")[-1]
    assert fe_tags["encoders.reused_from"].startswith(str(embeddings))  # frozen, not retrained
    assert _tags(run_dir, "preprocessing")[-1]["batches.computed"] == "2026-12-03"
    parents = _tags(run_dir)
    assert [t["mmpipe.new_batches"] for t in parents] == ["2026-12-01,2026-12-02", "2026-12-03"]

    manifest = data / "2026-12-01" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("a handwritten", "a hand-written"))
    with pytest.raises(DataError, match="batch '2026-12-01' changed") as error:
        pipeline(overrides=overrides)
    assert report(error.value, debug=False) == 2  # the CLI's one line and exit code

    window = pipeline(overrides=[*overrides, "training.window=last 1"],
                      refresh=["preprocessing"])
    assert window["batches"]["new"] == ["2026-12-01"]  # re-ingested
    training = _tags(run_dir, "training")[-1]
    assert training["mmpipe.training_batches"] == "2026-12-03"
    spec = json.loads((Path(window["stages"]["training"]["path"]) / "classifier.json")
                      .read_text())
    assert spec["training_batches"] == ["2026-12-03"]
    assert json.loads((run_dir / "batches").glob("*.json").__next__().read_text())[
        "batches"]["2026-12-01"] == list_batches(data)[0].digest


def test_batched_needs_a_source_that_reads_the_path():
    from mmcore.config import ConfigError

    with pytest.raises(ConfigError, match="data.batched needs a source that reads data.path"):
        load_config(overrides=["data.batched=true"])


def test_hash_split_is_a_function_of_the_id_alone():
    from mmcore.data.batches import hash_split

    ids = [f"row-{i}" for i in range(4000)]
    codes = hash_split(ids, 0.15, 0.2)
    assert np.array_equal(codes[:100], hash_split(ids[:100], 0.15, 0.2))
    shares = np.bincount(codes, minlength=3) / len(ids)
    np.testing.assert_allclose(shares, [0.65, 0.15, 0.2], atol=0.03)
