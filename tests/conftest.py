"""Test-wide set-up: quiet, self-contained Prefect and MLflow state, never the user's stores."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Before prefect is imported anywhere: its settings come from the environment.
_HOME = tempfile.mkdtemp(prefix="mmpipe-tests-prefect-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)
import mmcore  # noqa: E402, F401  (first, as in the CLI: it sets OMP_WAIT_POLICY before torch loads)
from flows.cli import environment  # noqa: E402

environment.prepare(_HOME)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test harness for the session (starting one costs ~20 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120), \
            environment.without_flow_heartbeats():  # as under the CLI: ~1 s less per flow run
        yield


# Set by pytest and Prefect while running, or by sklearn/torch once, on their first import.
LIBRARY_SET = {"PYTEST_CURRENT_TEST", "PREFECT__FLOW_RUN_ID", "KMP_DUPLICATE_LIB_OK",
               "KMP_INIT_AT_FORK", "TORCHINDUCTOR_CACHE_DIR"}


@pytest.fixture(autouse=True)
def _no_leaked_environment():
    """Fail a test that leaves environment variables changed (Lightning's hygiene)."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    changed -= LIBRARY_SET
    assert not changed, f"test leaked environment changes: {sorted(changed)}"


@pytest.fixture(autouse=True)
def _no_leaked_import_path():
    """Fail a test that leaves `sys.path` changed: a model loaded in process puts its own copy of
    `mmcore` first there (use `raw_rows.load_model`), and Dask workers spawned later inherit it."""
    import sys

    before = sys.path[:]
    yield
    assert sys.path == before, f"test left sys.path changed: {sys.path[:3]} ..."


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory):
    """An empty, fully migrated MLflow SQLite store to copy: creating one costs ~10 s here,
    copying it nothing."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


# Quick settings for end-to-end runs that test what surrounds the model, not its accuracy.
FAST_RUN = ["features.image_epochs=3", "features.text_epochs=3", "shared_space.epochs=5",
            "training.epochs=5"]


class FinishedRun:
    """A run directory after `mmpipe run` and `mmpipe compare`, as a user has it: MLflow's SQLite
    store, the stage outputs and the local Prefect server (still running) with the flow runs."""

    def __init__(self, path, outputs: dict[str, str]):
        import json

        self.path, self.outputs = path, outputs
        self.tracking_uri = f"sqlite:///{path / 'mlflow.db'}"
        self.prefect = json.loads((path / "prefect-server.json").read_text())

    def mmpipe(self, *args: str) -> str:
        return run_mmpipe(self.path, *args)


def run_mmpipe(run_dir, *args: str) -> str:
    """The `mmpipe` command in a subprocess, its state in `run_dir` (not the tests' home)."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI")
           and not k.startswith("PYTEST_")}
    mmpipe = Path(sys.executable).with_name("mmpipe")
    done = subprocess.run([str(mmpipe), *args, "--set", f"run_dir={run_dir}",
                           *[f"--set={o}" for o in FAST_RUN]],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mmpipe {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, mlflow_db_template):
    """`mmpipe run` then `mmpipe compare` on the built-in data in a fresh run directory; the
    local Prefect server is stopped at the end of the session."""
    path = tmp_path_factory.mktemp("finished-run")
    shutil.copy(mlflow_db_template, path / "mlflow.db")
    outputs = {}
    try:
        outputs["run"] = run_mmpipe(path, "run")
        # One seed and the default operator: the five learning-mode cells, not the full grid.
        outputs["compare"] = run_mmpipe(path, "compare", "--seeds", "0", "--fusions", "late")
        yield FinishedRun(path, outputs)
    finally:
        run_mmpipe(path, "server", "stop")
