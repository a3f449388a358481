"""Real `mmpipe run` processes against a real Prefect server: killed with SIGKILL at five points
(MMPIPE_FAULT, `tasks/faults.py`), and started together on one run directory.

- After the kills, one more run finishes with outputs bit for bit those of an uninterrupted run
  and the same metrics; no MLflow run stays RUNNING, the killed flow runs are Crashed, and no
  temporary file or folder is left.
- Three runs of one config and one of another, started at once in a fresh run directory, all
  succeed, and each stage key is computed once (one `cache=miss` MLflow child run per key).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient
from servers import MMPIPE, prefect_server

from mmcore.config import STAGES
from mmcore.io.integrity import manifest
from mmcore.io.parquet import MARKER

pytestmark = pytest.mark.slow

# Small: what is under test is what a kill leaves and what concurrent runs share, not the model
# (training needs 2+ epochs for the kill in its second).
FAST = ["features.image_epochs=2", "features.text_epochs=2", "shared_space.epochs=3",
        "training.epochs=3", "training.register_model=false", "data.limit=300"]
# Where each killed run dies: in preprocessing after its files are written, in feature
# extraction as its third embedding part starts (the next run reuses the parts written),
# between fusion's marker and its rename, in training's second epoch, and in testing's MLflow
# artifact logging.
FAULTS = ["preprocessing:metrics", "feature_extraction:partition@3", "shared_space:publish",
          "training:epoch@2", "testing:artifacts"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `prefect server start` on a free port, stopped at the end."""
    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home / "server") as url:
        yield {"url": url, "home": home}


def _start(server: dict, run_dir: Path, *extra: str, fault: str | None = None
           ) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": server["url"], "PREFECT_HOME": str(server["home"])}
    if fault:
        env["MMPIPE_FAULT"] = fault
    args = [a for item in [*FAST, f"run_dir={run_dir}", *extra] for a in ("--set", item)]
    return subprocess.Popen([MMPIPE, "run", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, expected_rc: int = 0) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == expected_rc, out[-4000:]
    return out


def _outputs(run_dir: Path) -> dict[str, dict[str, str]]:
    """Stage folder (stage/key) -> file -> SHA-256, read from disk; the marker itself aside
    (it names the MLflow run that made the folder)."""
    return {f"{folder.parent.name}/{folder.name}":
            {name: rec["sha256"] for name, rec in manifest(folder, skip={MARKER}).items()}
            for folder in sorted((run_dir / "stages").glob("*/*")) if folder.is_dir()}


def _client(run_dir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")


def _runs(run_dir: Path) -> list:
    client = _client(run_dir)
    return client.search_runs([client.get_experiment_by_name("default").experiment_id],
                              max_results=1000)


@pytest.fixture(scope="module")
def concurrent(server, tmp_path_factory) -> Path:
    """Three runs of one config and one of another (training.lr), started at once."""
    run_dir = tmp_path_factory.mktemp("concurrent")
    procs = [_start(server, run_dir) for _ in range(3)]
    procs.append(_start(server, run_dir, "training.lr=0.001"))
    outs = [_finish(proc) for proc in procs]
    assert all("test metrics:" in out for out in outs)
    return run_dir


def test_concurrent_runs_all_succeed_and_compute_each_stage_once(concurrent):
    runs = _runs(concurrent)
    parents = [r for r in runs if "stage" not in r.data.tags]
    children = [r for r in runs if "stage" in r.data.tags]
    assert len(parents) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    misses = Counter((r.data.tags["stage"], r.data.tags["cache.key"]) for r in children
                     if r.data.tags["cache"] == "miss")
    assert set(misses.values()) == {1}, misses  # no stage key computed twice
    # The other config shares the first three stages' keys: 5 + 2 keys in all.
    assert Counter(stage for stage, _ in misses) == {
        "preprocessing": 1, "feature_extraction": 1, "shared_space": 1, "training": 2, "testing": 2}
    assert len(children) == 4 * len(STAGES)  # every run reports every stage, hit or miss


def test_runs_killed_anywhere_leave_nothing_the_next_run_does_not_repair(server, concurrent,
                                                                         tmp_path,
                                                                         mlflow_db_template):
    shutil.copy(mlflow_db_template, tmp_path / "mlflow.db")  # a migrated store: ~10 s less
    previous = None
    for fault in FAULTS:
        out = _finish(_start(server, tmp_path, fault=fault), -signal.SIGKILL)
        assert "killing process" in out and fault.split("@")[0] in out
        if previous == "feature_extraction:partition@3":  # the parts done before the kill
            assert re.search(r"image\.parquet: 3 parts, [12] reused from an earlier", out), out
        previous = fault
        if fault == "shared_space:publish":  # complete, but never renamed into place
            leftover = list((tmp_path / "stages" / "shared_space").glob(".*.tmp"))
            assert len(leftover) == 1 and (leftover[0] / MARKER).exists()
            assert not [p for p in (tmp_path / "stages" / "shared_space").iterdir()
                        if not p.name.startswith(".") and p.suffix != ".json"]
    out = _finish(_start(server, tmp_path))
    assert "recovery: MLflow run" in out and "-> KILLED" in out

    # Outputs and metrics are those of an uninterrupted run of the same config.
    reference = {k: v for k, v in _outputs(concurrent).items()
                 if k in _outputs(tmp_path)}
    assert len(reference) == len(STAGES)
    assert _outputs(tmp_path) == reference
    finished = [r for r in _runs(tmp_path) if "stage" not in r.data.tags
                and r.info.status == "FINISHED"]
    uninterrupted = next(r for r in _runs(concurrent) if "stage" not in r.data.tags
                         and r.data.params["training.lr"] != "0.001")
    assert len(finished) == 1 and finished[0].data.metrics == uninterrupted.data.metrics

    # Nothing stays RUNNING; every killed run says why it was marked.
    runs = _runs(tmp_path)
    assert Counter(r.info.status for r in runs if "stage" not in r.data.tags) == {
        "KILLED": len(FAULTS), "FINISHED": 1}
    assert "RUNNING" not in {r.info.status for r in runs}
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 2 * len(FAULTS)  # the parents and the stages they were in
    assert all("died without finishing" in r.data.tags["mmpipe.recovery"] for r in killed)

    # Prefect: the killed flow runs and their stage's task runs are Crashed, none Running.
    _assert_prefect_crashed(server, [r.data.tags["prefect.flow_run_id"] for r in killed
                                     if "stage" not in r.data.tags])

    # No temporary folder or file, no record of a run in progress.
    assert not list(tmp_path.rglob(".*.tmp"))
    assert not list((tmp_path / "running").iterdir())


def _assert_prefect_crashed(server: dict, flow_run_ids: list[str]) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ids = [UUID(i) for i in flow_run_ids]
    with temporary_settings({PREFECT_API_URL: server["url"]}), \
            get_client(sync_client=True) as client:
        flows = [client.read_flow_run(i).state.name for i in ids]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
    assert flows == ["Crashed"] * len(ids)
    # The server learns of task runs from events the killed process may not have sent; those
    # it knows of are finished or Crashed, none Running.
    assert {t.state.name for t in tasks} <= {"Completed", "Cached", "Crashed"}, [
        (t.name, t.state.name) for t in tasks]
