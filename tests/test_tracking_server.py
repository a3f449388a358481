"""A team's MLflow: the pipeline against a real `mlflow server` that proxies artifacts, and
against one whose back-end store is PostgreSQL. Plots, Parquet records and the model must be
in the server's artifact store, where a colleague in another folder (or on another machine) can
load the registered model with nothing but the tracking URI."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from raw_rows import load_model
from servers import mlflow_server, postgres_bin, postgres_cluster

from mmcore.config import STAGES, load_config
from mmcore.data.sources import open_source
from tasks.tracking import runs

# As small as the pipeline goes: what is under test is where things are recorded.
TINY = ["data.limit=400", "features.image_epochs=1", "features.text_epochs=1",
        "shared_space.epochs=2", "training.epochs=2"]
MODEL = "models:/mmpipe-classifier@champion"


@pytest.mark.parametrize(("uri", "on_server"), [
    ("http://127.0.0.1:5000", True), ("https://mlflow.example.org", True),
    ("databricks", True), ("sqlite:///tmp/x.db", False),
    ("postgresql+psycopg://u@db/mlflow", False), ("file:///tmp/mlruns", False),
    ("/tmp/mlruns", False),
])
def test_only_a_store_without_a_server_keeps_artifacts_in_the_run_folder(
        uri, on_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_config(overrides=[f"run_dir={tmp_path}", "name=exp"])
    assert runs.has_artifact_store(uri) is on_server
    expected = None if on_server else (tmp_path / "mlartifacts" / "exp").resolve().as_uri()
    assert runs.artifact_location(cfg) == expected


def test_default_sqlite_store_keeps_artifacts_in_the_run_folder(tmp_path):
    cfg = load_config(overrides=[f"run_dir={tmp_path}"])
    client = runs.client_for(cfg)
    exp = client.get_experiment(runs.experiment_id(client, cfg))
    assert exp.artifact_location == (tmp_path / "mlartifacts" / "default").resolve().as_uri()


def predictions_for(summary: dict, rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Raw inputs (8x8 pixels 0-16, text) of the first test rows, as the built-in source yields
    them (its images corrupted by the default `data.image_noise`), and what testing predicted."""
    stages = summary["stages"]
    test = pq.read_table(Path(stages["preprocessing"]["path"]) / "test.parquet",
                         columns=["id", "text"]).slice(0, rows).to_pandas()
    expected = pq.read_table(Path(stages["testing"]["path"]) / "predictions.parquet"
                             ).to_pandas().set_index("id").loc[test["id"]]
    cfg = load_config(overrides=TINY)  # the runs of this module
    source = {row["id"]: row["image"] for batch in open_source(cfg.data, cfg.seed).batches(2048)
              for row in batch.select(["id", "image"]).to_pylist()}
    images = [(np.asarray(source[i]) * 16).reshape(8, 8).tolist() for i in test["id"]]
    frame = pd.DataFrame({"image": images, "text": test["text"]})
    return frame, np.stack(expected["probs"].to_numpy())


def run_pipeline(uri: str, run_dir: Path, refresh: list[str] | None = None) -> dict:
    from flows.pipeline import pipeline

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        return pipeline(overrides=[*TINY, f"run_dir={run_dir}"], refresh=refresh)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_db_template):
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(mlflow_db_template, root / "server.db")  # migrated: the server starts sooner
    with mlflow_server(root) as running:
        yield running


@pytest.fixture(scope="module")
def server_run(server, run_dir, prefect_harness) -> dict:
    return run_pipeline(server.url, run_dir)


@pytest.mark.slow
def test_plots_records_and_model_land_in_the_servers_artifact_store(server, server_run,
                                                                     run_dir):
    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name("default")
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    testing_run = server_run["stages"]["testing"]
    runs = {r.data.tags["stage"]: r for r in client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{server_run['parent_run_id']}'")}
    assert set(runs) == set(STAGES)
    stored = {p.relative_to(server.artifacts).as_posix()
              for p in server.artifacts.rglob("*") if p.is_file()}
    testing_id, fusion_id = runs["testing"].info.run_id, runs["shared_space"].info.run_id
    for name in ("confusion.png", "comparison.csv"):
        assert f"{exp.experiment_id}/{testing_id}/artifacts/{name}" in stored
    assert f"{exp.experiment_id}/{fusion_id}/artifacts/shared_space.png" in stored
    assert any(p.endswith("/artifacts/MLmodel") and "/models/" in p for p in stored)
    assert not (run_dir / "mlartifacts").exists()
    assert Path(testing_run["path"], "predictions.parquet").exists()  # stage outputs stay here

    # Parquet files are recorded, not copied: the source is the file in the run folder, which
    # a colleague opens through the shared run folder (docs/scale.md).
    inputs = runs["shared_space"].inputs.dataset_inputs
    sources = {d.dataset.name: d.dataset.source for d in inputs}
    assert str(Path(server_run["stages"]["feature_extraction"]["path"]) / "image.parquet") \
        in sources["feature_extraction/image"]
    assert client.get_run(server_run["parent_run_id"]).data.tags["mmpipe.run_dir"] == \
        str(run_dir.resolve())


@pytest.mark.slow
def test_a_colleague_in_another_folder_loads_the_registered_model(server, server_run,
                                                                  tmp_path):
    frame, expected = predictions_for(server_run, rows=12)
    frame.to_pickle(tmp_path / "input.pkl")
    code = ("import mlflow, pandas as pd\n"
            f"model = mlflow.pyfunc.load_model({MODEL!r})\n"
            "model.predict(pd.read_pickle('input.pkl')).to_pickle('output.pkl')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=300,
                   env={**env, "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": server.url})
    out = pd.read_pickle(tmp_path / "output.pkl")
    assert list(out.columns)[:2] == ["zero", "one"]
    assert np.allclose(out.to_numpy(), expected, atol=1e-4)


@pytest.mark.slow
def test_an_experiment_with_a_client_side_artifact_folder_is_reported(server, tmp_path,
                                                                      monkeypatch, caplog):
    """Created before this fix (or by hand) with a `file:` location: it cannot move, so say so."""
    MlflowClient(server.url).create_experiment("legacy",
                                               artifact_location=tmp_path.as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    cfg = load_config(overrides=[f"run_dir={tmp_path}", "name=legacy"])
    with caplog.at_level(logging.WARNING, logger="tasks.tracking.runs"):
        runs.experiment_id(runs.client_for(cfg), cfg)
    assert "colleagues" in caplog.text and tmp_path.as_uri() in caplog.text


@pytest.mark.slow
def test_a_server_with_a_postgresql_store(server_run, run_dir, tmp_path_factory):
    """The same run folder (upstream stages cached), training and testing run again and record
    into an `mlflow server` whose back-end store is a throwaway PostgreSQL cluster."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with postgres_cluster(bin_dir) as database, \
            mlflow_server(tmp_path_factory.mktemp("pg-server"), database) as pg_server:
        summary = run_pipeline(pg_server.url, run_dir, refresh=["training"])
        client = MlflowClient(pg_server.url)
        parent = client.get_run(summary["parent_run_id"])
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert {r.data.tags["stage"]: r.data.tags["cache"] for r in children} == {
            "preprocessing": "hit", "feature_extraction": "hit", "shared_space": "hit",
            "training": "miss", "testing": "miss"}
        assert parent.data.params["data.limit"] == "400"
        assert parent.data.metrics["test.accuracy"] == round(  # rounded as shown
            server_run["metrics"]["test.accuracy"], 4)
        frame, expected = predictions_for(summary, rows=5)
        model = load_model(pg_server.url, MODEL)
        assert np.allclose(model.predict(frame).to_numpy(), expected, atol=1e-4)
        assert any(pg_server.artifacts.rglob("MLmodel"))
