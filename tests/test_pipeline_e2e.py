"""End to end on the built-in digits: real Prefect flow, real MLflow (SQLite in a temp dir, read
back through MlflowClient), real Parquet read back by schema and value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from raw_rows import load_model
from servers import wait_for

from mmcore.config import STAGES, load_config
from tasks.tracking import alerts

FAST = ["features.image_epochs=3", "features.text_epochs=3", "shared_space.epochs=5",
        "training.epochs=5"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, prefect_harness) -> Path:
    return tmp_path_factory.mktemp("run")


def run(run_dir: Path, *extra: str, stages=None, refresh=None) -> dict:
    from flows.pipeline import pipeline

    return pipeline(overrides=[*FAST, f"run_dir={run_dir}", *extra], stages=stages,
                    refresh=refresh)


def states(summary: dict) -> dict[str, str]:
    return {stage: info["state"] for stage, info in summary["stages"].items()}


@pytest.fixture(scope="module")
def cold(run_dir) -> dict:
    return run(run_dir)


def client(run_dir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")


def test_cold_run_misses_everywhere_and_writes_documented_outputs(cold):
    assert states(cold) == dict.fromkeys(STAGES, "miss")
    paths = {stage: Path(info["path"]) for stage, info in cold["stages"].items()}
    for path in paths.values():
        assert (path / "_COMPLETE.json").exists()

    samples = pq.read_table(paths["preprocessing"] / "train.parquet")
    assert samples.schema.field("image").type == pa.list_(pa.float32(), 64)
    assert samples.schema.field("tokens").type == pa.list_(pa.int32())
    assert samples.schema.field("label").type == pa.int64()
    assert set(samples.column("split").to_pylist()) == {"train"}
    meta = pq.read_schema(paths["preprocessing"] / "train.parquet").metadata[b"mmpipe"]
    assert b'"stage": "preprocessing"' in meta and b'"cache_key"' in meta
    rows = sum(pq.read_metadata(paths["preprocessing"] / f"{s}.parquet").num_rows
               for s in ("train", "val", "test"))
    assert rows == 1797

    for modality, dim in (("image", 64), ("text", 64)):
        feats = pq.read_table(paths["feature_extraction"] / f"{modality}.parquet")
        assert feats.schema.names == ["id", "split", "label", "embedding"]
        assert feats.schema.field("embedding").type == pa.list_(pa.float32(), dim)
        assert feats.num_rows == 1797
        shared = pq.read_table(paths["shared_space"] / f"shared_{modality}.parquet")
        assert shared.schema.field("embedding").type == pa.list_(pa.float32(), 32)
        assert shared.column("id").to_pylist() == feats.column("id").to_pylist()

    preds = pq.read_table(paths["testing"] / "predictions.parquet")
    assert preds.schema.names == ["id", "label", "pred", "probs"]
    probs = np.asarray(preds.column("probs").combine_chunks().flatten()).reshape(-1, 10)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (paths["testing"] / "confusion.png").stat().st_size > 1000
    # Occluded, noisy default images (data.image_noise) and 3 encoder epochs: well above the
    # 0.1 of chance, below the ~0.9 of the full defaults.
    assert 0.6 < cold["metrics"]["test.accuracy"] <= 1.0


def test_mlflow_has_parent_and_five_child_runs(cold, run_dir):
    c = client(run_dir)
    exp = c.get_experiment_by_name("default")
    parent = c.get_run(cold["parent_run_id"])
    assert parent.data.params["training.epochs"] == "5"
    assert parent.data.params["data.source"] == "digits"
    assert parent.data.tags["prefect.flow_run_id"]
    assert "test.accuracy" in parent.data.metrics
    children = c.search_runs([exp.experiment_id],
                             f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_stage = {r.data.tags["stage"]: r for r in children}
    assert set(by_stage) == set(STAGES)
    assert all(r.data.tags["cache"] == "miss" for r in children)
    fe_run = by_stage["feature_extraction"].info.run_id
    assert "summary/encoder_probe.image.test_acc" in by_stage["feature_extraction"].data.metrics
    # One point per encoder epoch, counted from 1, under curves/; single values under summary/.
    assert [m.step for m in c.get_metric_history(fe_run, "curves/image.val_acc")] == [1, 2, 3]
    training = by_stage["training"].data.metrics
    # Late fusion: trained on the experts' NLL sum; train and val NLL both of the fused output.
    for name in ("train_expert_nll_sum", "train_nll", "val_nll", "val_acc"):
        history = c.get_metric_history(by_stage["training"].info.run_id, f"curves/{name}")
        assert [m.step for m in history] == [1, 2, 3, 4, 5], name
    assert {"summary/val_acc", "summary/val_acc_after_calibration", "summary/best_epoch",
            "summary/fusion_weight.text"} <= set(training)
    # The summary's val_acc and best_epoch name the val curve's best point.
    val = c.get_metric_history(by_stage["training"].info.run_id, "curves/val_acc")
    best = max(val, key=lambda m: (m.value, -m.step))
    assert (training["summary/val_acc"], training["summary/best_epoch"]) == (best.value,
                                                                             best.step)
    assert not [k for k in training if "/" not in k]  # every key in a chart section
    assert by_stage["shared_space"].data.metrics["summary/mean_paired_distance"] < \
        by_stage["shared_space"].data.metrics["summary/mean_random_distance"]
    inputs = by_stage["shared_space"].inputs.dataset_inputs
    assert any(d.dataset.name.endswith("image") for d in inputs)


def test_the_default_run_registers_the_candidate_and_first_champion(cold):
    night = cold["model"]["night"]
    assert cold["model"]["night_markdown"].startswith("## This night")
    model = {k: v for k, v in cold["model"].items() if not k.startswith("night")}
    assert model == {"name": "mmpipe-classifier", "version": "1", "new_version": True,
                     "candidate": True, "champion": "1", "decision": "promoted: first champion"}
    assert night["drift"] is None and night["gate"] is None  # no champion to check against
    assert night["events"] == ["mmpipe.champion.promoted"]


def test_registered_model_predicts_from_raw_inputs(cold, run_dir):
    """The pyfunc chain on raw 8x8 arrays (0-16) + raw text reproduces the testing stage."""
    from sklearn.datasets import load_digits

    test = pq.read_table(Path(cold["stages"]["preprocessing"]["path"]) / "test.parquet",
                         columns=["id", "text"]).slice(0, 20).to_pandas()
    expected = pq.read_table(Path(cold["stages"]["testing"]["path"]) / "predictions.parquet"
                             ).to_pandas().set_index("id").loc[test["id"]]
    from mmcore.data.digits import corrupt_digits

    # The raw scans as the default source yields them: occluded and noised (data.image_noise).
    scans = corrupt_digits(load_digits().images / 16.0, load_config().data.image_noise, 0) * 16
    images = scans[[int(i.split("-")[1]) for i in test["id"]]]
    model = load_model(f"sqlite:///{run_dir / 'mlflow.db'}", "models:/mmpipe-classifier@champion")
    out = model.predict(pd.DataFrame({"image": list(images), "text": test["text"]}))
    assert list(out.columns)[:3] == ["zero", "one", "two"]
    assert np.allclose(out.to_numpy(), np.stack(expected["probs"].to_numpy()), atol=1e-4)


def test_second_run_hits_cache_in_every_stage(cold, run_dir):
    again = run(run_dir)
    assert states(again) == dict.fromkeys(STAGES, "hit")
    assert again["metrics"] == cold["metrics"]
    children = client(run_dir).search_runs(
        [client(run_dir).get_experiment_by_name("default").experiment_id],
        f"tags.mlflow.parentRunId = '{again['parent_run_id']}'")
    assert {r.data.tags["cache"] for r in children} == {"hit"}
    producers = client(run_dir).search_runs(
        [client(run_dir).get_experiment_by_name("default").experiment_id],
        f"tags.mlflow.parentRunId = '{cold['parent_run_id']}'")
    producer = {r.data.tags["stage"]: r for r in producers}
    for hit in children:
        made = producer[hit.data.tags["stage"]]
        assert hit.data.tags["cache.produced_by_run"] == made.info.run_id
        assert hit.data.params == made.data.params
        assert hit.data.tags["prefect.flow_run_id"] != made.data.tags["prefect.flow_run_id"]
    assert children[0].data.tags["prefect.flow_run_id"]
    testing = next(r for r in children if r.data.tags["stage"] == "testing")
    assert testing.data.metrics["test.accuracy"] == cold["metrics"]["test.accuracy"]


def test_changing_a_training_setting_reruns_training_and_testing_only(cold, run_dir):
    changed = run(run_dir, "training.lr=0.001")
    assert states(changed) == {"preprocessing": "hit", "feature_extraction": "hit",
                               "shared_space": "hit", "training": "miss", "testing": "miss"}


def test_a_robustness_row_cap_reruns_testing_only_and_is_recorded(cold, run_dir):
    """`testing.robustness_rows` is testing's setting alone; the rows its curves used are in
    the curves' table and in MLflow (the built-in test split, under the default cap: whole)."""
    capped = run(run_dir, "testing.robustness_rows=100")
    assert states(capped) == {**dict.fromkeys(STAGES, "hit"), "testing": "miss"}
    assert capped["metrics"]["test.accuracy"] == cold["metrics"]["test.accuracy"]
    c = client(run_dir)
    for summary, rows in ((cold, None), (capped, 100)):
        testing = Path(summary["stages"]["testing"]["path"])
        rows = rows or pq.read_metadata(Path(summary["stages"]["preprocessing"]["path"])
                                        / "test.parquet").num_rows
        curves = pq.read_table(testing / "robustness.parquet").to_pandas()
        assert (curves["rows"] == rows).all()
        [testing_run] = c.search_runs(
            [c.get_experiment_by_name("default").experiment_id],
            f"tags.mlflow.parentRunId = '{summary['parent_run_id']}' and tags.stage = 'testing'")
        logged = testing_run.data.metrics
        assert logged["summary/robustness_rows"] == rows


def test_deleted_fusion_output_is_rebuilt_and_downstream_reused(cold, run_dir):
    shutil.rmtree(cold["stages"]["shared_space"]["path"])
    rebuilt = run(run_dir)
    assert states(rebuilt)["shared_space"] == "miss"
    assert states(rebuilt)["training"] == "hit"
    assert rebuilt["metrics"] == cold["metrics"]


def test_stage_selection_runs_missing_upstream_first(cold, run_dir):
    cfg_overrides = ["training.hidden=32"]
    shutil.rmtree(cold["stages"]["shared_space"]["path"])
    summary = run(run_dir, *cfg_overrides, stages=["training", "testing"])
    assert states(summary) == {"preprocessing": "reused", "feature_extraction": "reused",
                               "shared_space": "miss", "training": "miss", "testing": "miss"}


def test_refresh_forces_a_stage_and_what_follows(cold, run_dir):
    summary = run(run_dir, refresh=["training"])
    assert states(summary) == {"preprocessing": "hit", "feature_extraction": "hit",
                               "shared_space": "hit", "training": "miss", "testing": "miss"}
    assert summary["metrics"] == cold["metrics"]
    # The same weights again: the registry keeps the version it has.
    assert summary["model"]["version"] == cold["model"]["version"]
    assert summary["model"]["new_version"] is False


def test_status_reports_hits_and_reasons(cold, run_dir):
    from tasks.stages.table import status_all

    cfg = load_config(overrides=[*FAST, f"run_dir={run_dir}", "training.epochs=7"])
    rows = {r["stage"]: r for r in status_all(cfg)}
    assert rows["shared_space"]["state"] == "hit"
    assert rows["training"]["state"] == "miss"
    assert "epochs" in rows["training"]["reason"]
    assert rows["testing"]["reason"].startswith("upstream output changed")


def test_a_code_edit_misses_that_stage_and_those_after_it_only(cold, run_dir, tmp_path):
    """In a copy of the project, change one line of the fusion stage's code: `status` there says
    fusion misses because its code changed, the stages after it because fusion changed, and the
    stages before it are still hits."""
    root = Path(__file__).resolve().parent.parent
    for package in ("mmcore", "tasks", "flows"):
        shutil.copytree(root / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    fusion = tmp_path / "mmcore/stages/shared_space.py"
    fusion.write_text(fusion.read_text().replace("seed_everything(seed)",
                                                 "seed_everything(seed + 1)", 1))
    code = ("import json, sys\n"
            "from mmcore.config import load_config\n"
            "from tasks.stages.table import status_all\n"
            "cfg = load_config(overrides=sys.argv[1:])\n"
            "print(json.dumps(status_all(cfg)))\n")
    out = subprocess.run([sys.executable, "-c", code, *FAST, f"run_dir={run_dir}"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                         capture_output=True, text=True, check=True)
    rows = {r["stage"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    assert {s: r["state"] for s, r in rows.items()} == {
        "preprocessing": "hit", "feature_extraction": "hit", "shared_space": "miss",
        "training": "miss", "testing": "miss"}
    assert rows["shared_space"]["reason"] == "code changed: mmcore.stages.shared_space"
    assert rows["training"]["reason"] == "upstream output changed: shared_space"


def test_mmcore_never_imports_prefect_or_mlflow():
    code = ("import pkgutil, importlib, sys, mmcore\n"
            "for m in pkgutil.walk_packages(mmcore.__path__, 'mmcore.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('prefect', 'mlflow')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def _stage_file(summary: dict, stage: str, name: str) -> Path:
    return Path(summary["stages"][stage]["path"]) / name


def test_a_truncated_output_misses_naming_the_file_and_only_its_stage_reruns(cold, run_dir):
    """Half of fusion's Parquet file cut off, its marker left in place: status and the run name
    the file; fusion runs again, and the stages after it are hits because its rebuilt output is
    bit for bit the same."""
    from tasks.stages.table import status_all

    cfg = load_config(overrides=[*FAST, f"run_dir={run_dir}"])
    path = _stage_file(cold, "shared_space", "shared_image.parquet")
    size = path.stat().st_size
    os.truncate(path, size // 2)
    rows = {r["stage"]: r for r in status_all(cfg)}
    assert rows["shared_space"]["state"] == "miss"
    assert rows["shared_space"]["reason"] == (f"damaged output: shared_image.parquet is "
                                        f"{size // 2:,} bytes, the marker says {size:,} "
                                        "(truncated)")
    assert rows["feature_extraction"]["state"] == rows["training"]["state"] == "hit"
    again = run(run_dir)
    assert states(again) == {"preprocessing": "hit", "feature_extraction": "hit",
                             "shared_space": "miss", "training": "hit", "testing": "hit"}
    assert path.stat().st_size == size
    assert again["metrics"] == cold["metrics"]


def test_flipped_bytes_are_found_by_status_and_verify(cold, run_dir, capsys):
    from flows.cli.commands import main
    from tasks.stages.table import status_all

    cfg = load_config(overrides=[*FAST, f"run_dir={run_dir}"])
    assert main(["verify", "--set", f"run_dir={run_dir}"]) == 0
    path = _stage_file(cold, "preprocessing", "train.parquet")
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    try:
        rows = {r["stage"]: r for r in status_all(cfg)}
        assert rows["preprocessing"]["reason"] == (
            f"damaged output: train.parquet has the marker's size ({len(original):,} bytes) but "
            "not its content (altered)")
        capsys.readouterr()
        assert main(["verify", "--set", f"run_dir={run_dir}"]) == 1
        out = capsys.readouterr().out
        assert f"damaged      preprocessing/{path.parent.name}  train.parquet has" in out
        assert main(["verify", "--set", f"run_dir={run_dir}", "--set", "seed=99"]) == 0
    finally:
        path.write_bytes(original)
    assert {r["state"] for r in status_all(cfg)} == {"hit"}  # same bytes again: trusted


def test_an_upstream_rebuilt_with_other_content_misses_the_stages_built_on_it(cold, run_dir):
    """Keys come from the config, so a rebuilt upstream keeps its key; its marker's content
    digest tells the stages after it that what they were built from has changed."""
    from mmcore.io.parquet import MARKER, mark_complete, read_marker
    from tasks.stages.table import status_all

    cfg = load_config(overrides=[*FAST, f"run_dir={run_dir}"])
    folder = _stage_file(cold, "shared_space", "")
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    try:
        table = pq.read_table(folder / "shared_text.parquet")
        pq.write_table(table, folder / "shared_text.parquet", row_group_size=100)
        marker = read_marker(folder)
        (folder / MARKER).unlink()
        mark_complete(folder, {k: marker[k] for k in marker if k not in ("files", "content")})
        rows = {r["stage"]: r for r in status_all(cfg)}
        assert {s: r["state"] for s, r in rows.items()} == {
            "preprocessing": "hit", "feature_extraction": "hit", "shared_space": "hit",
            "training": "miss", "testing": "miss"}
        assert rows["training"]["reason"] == ("upstream output changed: shared_space was rebuilt "
                                              "with other content")
    finally:
        for name, data in saved.items():
            (folder / name).write_bytes(data)
    assert {r["state"] for r in status_all(cfg)} == {"hit"}


def test_recovery_marks_a_dead_runs_prefect_and_mlflow_runs(cold, run_dir):
    """A run record whose process is gone: its flow run and task run become Crashed, its
    RUNNING MLflow runs KILLED with a note; a live run's record is left alone. (Here, to share
    the module's MLflow store: creating one takes seconds.)"""
    import logging

    from mlflow import MlflowClient
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from mmcore.io.parquet import write_json
    from tasks.engine import recovery
    from tasks.tracking import runs

    @flow(name="crash-me")
    def crash_me() -> None: ...

    @task(name="stage")
    def stage() -> None: ...

    cfg = load_config(overrides=[f"run_dir={run_dir}", "name=recovery"])
    mlflow = MlflowClient(runs.tracking_uri(run_dir))
    experiment = runs.experiment_id(mlflow, cfg)
    with get_client(sync_client=True) as client:
        dead_run = client.create_flow_run(crash_me, state=Running())
        live_run = client.create_flow_run(crash_me, state=Running())
        task_run = client.create_task_run(stage, dead_run.id, "0", state=Running())
    mlflow_runs = {}
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead_pid = proc.pid
    for name, flow_run_id in (("dead", dead_run.id), ("live", live_run.id)):
        mlflow_runs[name] = mlflow.create_run(experiment,
                                              tags={"prefect.flow_run_id": str(flow_run_id)})
        owner = recovery.owner() | ({"pid": dead_pid} if name == "dead" else {})
        write_json(run_dir / "running" / f"{flow_run_id}.json", {
            "flow_run_id": str(flow_run_id), "owner": owner,
            "prefect_api_url": recovery._prefect_api_url(), "experiment": "recovery",
            "tracking_uri": runs.tracking_uri(run_dir)})

    done = recovery.recover(cfg, "new-flow-run", logging.getLogger("test"))

    assert len(done) == 3, done
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(dead_run.id).state.name == "Crashed"
        assert client.read_task_run(task_run.id).state.name == "Crashed"
        assert client.read_flow_run(live_run.id).state.name == "Running"
    killed = mlflow.get_run(mlflow_runs["dead"].info.run_id)
    assert killed.info.status == "KILLED"
    assert "died without finishing" in killed.data.tags["mmpipe.recovery"]
    assert mlflow.get_run(mlflow_runs["live"].info.run_id).info.status == "RUNNING"
    assert [p.stem for p in (run_dir / "running").iterdir()] == [str(live_run.id)]
    recovery.end(cfg, str(live_run.id))
    mlflow.set_terminated(mlflow_runs["live"].info.run_id)


class _Planted:
    """Unpickling this creates the file `path`: proof that a pickle was loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _result_files(run_dir: Path) -> list[Path]:
    """Every result Prefect persisted: the run folder's and Prefect's own storage."""
    roots = [run_dir / "prefect-results", Path(os.environ["PREFECT_HOME"]) / "storage",
             run_dir / "prefect" / "storage"]
    return sorted(p for root in roots if root.is_dir() for p in root.rglob("*") if p.is_file())


def _assert_json_records(files: list[Path]) -> None:
    """Each file a JSON result record of the JSON serializer: no pickle, not even
    base64-encoded inside the JSON (Prefect's pickle serializer does that). A stage's record
    holds a StageRef; the others hold a failed run's error: a task's as a record, a flow's as
    the bare serialized error (Prefect writes it even with persist_result=False; Prefect's
    storage is shared by this session's tests)."""
    from tasks.engine.keys import StageRef
    from tasks.engine.results import stage_ref

    for path in files:
        raw = path.read_bytes()
        assert not raw.startswith(b"\x80"), f"{path}: a pickle"
        assert b"pickle" not in raw, f"{path}: names a pickle serializer"
        record = json.loads(raw)
        if "metadata" in record:
            assert record["metadata"]["serializer"]["type"] == "json", path
            result = json.loads(record["result"])
        else:
            result = record
        if path.name.split("-")[0] in STAGES:
            assert isinstance(stage_ref(result), StageRef), path
        else:
            assert set(result) == {"__exc_type__", "message"}, path


def test_a_failed_run_writes_its_error_as_json_not_a_pickle(run_dir, tmp_path):
    """Prefect persists a failed flow run's exception even with persist_result=False, with the
    flow's serializer (cloudpickle by default) into its storage: the flows name JSON."""
    before = set(_result_files(run_dir))
    with pytest.raises(Exception, match="no-such-folder"):
        run(tmp_path, "data.source=mnist", f"data.path={tmp_path / 'no-such-folder'}")
    written = set(_result_files(run_dir)) - before
    assert written, "the failed run persisted no error record (has Prefect changed?)"
    _assert_json_records(sorted(written))
    # the failure hook sent `mmpipe.run.failed` before the run returned (the server stores
    # events in batches: a few seconds later)
    failed = wait_for("the run.failed event", lambda: [
        e for e in _events(alerts.RUN_FAILED) if "no-such-folder" in e["payload"]["message"]],
        timeout=30, interval=1)
    assert len(failed) == 1 and failed[0]["payload"]["flow"] == "mmpipe"
    assert failed[0]["resource"]["prefect.resource.id"].startswith("prefect.flow-run.")


def _events(name: str) -> list[dict]:
    """The events of that name the Prefect server has."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        response = client.request("POST", "/events/filter",
                                  json={"filter": {"event": {"name": [name]}}, "limit": 50})
    return response.raise_for_status().json()["events"]


def test_persisted_results_are_json_and_a_planted_pickle_is_never_loaded(cold, run_dir):
    """Issue 16: no pickles in shared storage. The stage results Prefect persisted are JSON;
    a cached rerun reads them back as StageRefs; a pickle put in place of a record (as an
    older mmpipe wrote, or planted) is never loaded: it is replaced by a JSON record made from
    the stage's verified output, and the stage stays a cache hit."""
    import cloudpickle
    from prefect.serializers import PickleSerializer

    files = _result_files(run_dir)
    assert {p.name.split("-")[0] for p in files} >= set(STAGES), files
    _assert_json_records(files)
    record = next(p for p in files if p.name.startswith("preprocessing-"))
    loaded, planted = run_dir / "pickle-was-loaded", json.loads(record.read_text())
    planted["metadata"]["serializer"] = PickleSerializer().model_dump(mode="json")
    planted["result"] = PickleSerializer().dumps(_Planted(loaded)).decode()
    cloudpickle.loads(cloudpickle.dumps(_Planted(loaded))).close()
    assert loaded.exists()  # the payload works: loading it creates the file
    loaded.unlink()
    record.write_text(json.dumps(planted))

    again = run(run_dir)

    assert not loaded.exists()
    assert states(again) == dict.fromkeys(STAGES, "hit")
    assert again["metrics"] == cold["metrics"]
    _assert_json_records(_result_files(run_dir))
