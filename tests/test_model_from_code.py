"""The registered model carries its code: `models:/mmpipe-classifier@champion` loads and serves in
a fresh virtual environment that has only the model's requirements.txt installed, not this
project, from a folder outside it; nothing in it is a pickle and loading it unpickles nothing;
on raw test rows it answers what the testing stage predicted.

The fresh environment (~1.7 GB, 1-2 minutes to build) is kept between runs in
MMPIPE_TEST_VENVS (default ~/.cache/mmpipe/test-venvs), one per Python version and
requirements.txt, built under a file lock and used only once its marker is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from raw_rows import raw_test_rows
from servers import free_port, server_process
from test_serving import post, readme_serve_example

from mmcore.config import load_config
from mmcore.inference import InferenceChain
from tasks.engine.fingerprint import module_digests
from tasks.stages.training import MODEL_CODE
from tasks.tracking.logged_model import REQUIREMENTS, content_digest
from tasks.tracking.runs import using_tracking_uri

pytestmark = pytest.mark.slow
NAME = "mmpipe-classifier"
MODEL = f"models:/{NAME}@champion"
VENVS = Path(os.environ.get("MMPIPE_TEST_VENVS", Path.home() / ".cache/mmpipe/test-venvs"))
COMPLETE = "mmpipe-complete"  # written last: a venv without it is rebuilt

# Run in the fresh environment: the project is not importable; every way to unpickle refuses;
# the model loads by its registry URI and predicts the rows in argv[1] into argv[2].
LOAD_AND_PREDICT = """
import importlib.util, json, sys
for name in ("mmcore", "tasks", "flows"):
    assert importlib.util.find_spec(name) is None, f"{name} is importable here"
import cloudpickle, mlflow.pyfunc, pandas as pd, pickle, torch

def refuse(*args, **kwargs):
    raise AssertionError("loading the model unpickled something")

pickle.load = pickle.loads = pickle.Unpickler = refuse
cloudpickle.load = cloudpickle.loads = torch.load = refuse
model = mlflow.pyfunc.load_model(sys.argv[3])
rows = json.loads(open(sys.argv[1]).read())
out = model.predict(pd.DataFrame(rows))
json.dump({"columns": list(out.columns), "probs": out.to_numpy().tolist(),
           "mmcore": sys.modules["mmcore"].__file__,
           "modules": sorted({m.split(".")[0] for m in sys.modules})}, open(sys.argv[2], "w"))
"""


def bare_env(venv: Path, **extra: str) -> dict[str, str]:
    """This environment without the project: no PYTHONPATH, no virtualenv of ours on PATH, no
    MLflow/Prefect/pytest settings; `venv`'s bin first on PATH."""
    ours = str(Path(sys.executable).parent)
    path = os.pathsep.join([str(venv / "bin"), *(p for p in os.environ.get("PATH", "").split(
        os.pathsep) if p and p != ours)])
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
           and not k.startswith(("MLFLOW_", "PREFECT_", "PYTEST_"))}
    return {**env, "PATH": path, **extra}


def fresh_venv(requirements: Path) -> Path:
    """A virtual environment (not --system-site-packages) with only `requirements` installed,
    torch first at its exact version; kept in VENVS for the next run."""
    text = requirements.read_text()
    key = hashlib.sha256(f"{sys.version}\n{text}".encode()).hexdigest()[:16]
    VENVS.mkdir(parents=True, exist_ok=True)
    venv = VENVS / key
    with open(VENVS / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building it
        if not (venv / COMPLETE).exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet"]
            torch = next(line for line in text.splitlines() if line.startswith("torch=="))
            for args in ([torch], ["-r", str(requirements)]):
                subprocess.run(pip + args, check=True, env=bare_env(venv), timeout=900)
            (venv / COMPLETE).write_text(text)
    return venv


@pytest.fixture(scope="module")
def champion(finished_run) -> dict:
    """The champion's version, its downloaded folder, and the raw test rows with the testing
    stage's predictions for them (that stage's run is the training run's sibling)."""
    client = MlflowClient(finished_run.tracking_uri)
    mv = client.get_model_version_by_alias(NAME, "champion")
    parent = client.get_run(mv.run_id).data.tags["mlflow.parentRunId"]
    (testing,) = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}' and tags.stage = 'testing'")
    stages = finished_run.path / "stages"
    cfg = load_config(overrides=[f"run_dir={finished_run.path}"])  # its source and seed
    frame, expected = raw_test_rows(cfg, stages / "preprocessing" / mv.tags["data.digest"],
                                    stages / "testing" / testing.data.tags["cache.key"],
                                    client.get_run(parent).data.tags["test_modalities"].split("+"))
    with using_tracking_uri(finished_run.tracking_uri):  # the registry's too
        folder = Path(mlflow.artifacts.download_artifacts(
            MODEL, dst_path=str(finished_run.path / "champion")))
    return {"version": mv, "folder": folder, "frame": frame, "expected": expected}


@pytest.fixture(scope="module")
def venv(champion) -> Path:
    return fresh_venv(champion["folder"] / "requirements.txt")


def pickles_in(folder: Path) -> list[str]:
    """Files that are, or hold, a pickle: by name, by a pickle's first and last bytes (protocol
    2-5 header, STOP opcode), or as members of a zip (torch.save writes data.pkl in a zip)."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix in (".pkl", ".pickle", ".pt", ".pth", ".joblib") or (
                data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
                and data.endswith(b".")):
            found.append(str(path.relative_to(folder)))
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                found += [f"{path.relative_to(folder)}:{n}" for n in z.namelist()
                          if n.endswith((".pkl", ".pickle"))]
    return found


def test_the_model_is_code_json_and_safetensors_with_pinned_requirements(champion):
    folder = champion["folder"]
    assert pickles_in(folder) == []
    flavor = mlflow.models.Model.load(str(folder)).flavors["python_function"]
    assert "python_model" not in flavor and not (folder / "python_model.pkl").exists()
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (folder / "model_code.py").read_text() == \
        (Path(__file__).parent.parent / "tasks/tracking/model_code.py").read_text()
    assert sorted(p.name for p in (folder / "artifacts/chain").iterdir()) == \
        ["chain.json", "chain.safetensors"]
    # It ships the mmcore modules its code reaches, and no others.
    shipped = {".".join(p.relative_to(folder / "code").with_suffix("").parts)
               .removesuffix(".__init__") for p in (folder / "code").rglob("*.py")}
    assert shipped == {m for m in module_digests(MODEL_CODE) if m.startswith("mmcore")}
    pins = dict(line.split("==") for line in
                (folder / "requirements.txt").read_text().split())
    assert sorted(pins) == sorted(REQUIREMENTS)
    assert pins["torch"] == version("torch").split("+")[0]
    assert pins["mlflow"] == version("mlflow")


def test_the_content_digest_covers_weights_spec_and_code(champion):
    """The version's digest is of the chain it carries and the code it ships: the same weights
    with other serving code would be another version."""
    chain = InferenceChain.load(champion["folder"] / "artifacts/chain")
    code = module_digests(MODEL_CODE)
    assert content_digest(chain, code) == champion["version"].tags["content.digest"]
    assert content_digest(chain, {**code, MODEL_CODE: "edited"}) != \
        champion["version"].tags["content.digest"]


def test_champion_loads_where_the_project_is_not_installed(champion, venv, finished_run,
                                                           tmp_path):
    frame = champion["frame"]
    rows = {c: [np.asarray(v).tolist() if c == "image" else v for v in frame[c]]
            for c in frame.columns}
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    subprocess.run([str(venv / "bin/python"), "-c", LOAD_AND_PREDICT, "rows.json", "out.json",
                    MODEL], cwd=tmp_path, check=True, timeout=300,
                   env=bare_env(venv, MLFLOW_TRACKING_URI=finished_run.tracking_uri,
                                MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false"))
    out = json.loads((tmp_path / "out.json").read_text())
    assert "/code/mmcore/" in out["mmcore"]  # the model's own copy
    assert not {"tasks", "flows", "prefect", "sklearn"} & set(out["modules"])
    assert out["columns"][:3] == ["zero", "one", "two"]
    np.testing.assert_allclose(np.array(out["probs"]), champion["expected"], atol=1e-5)


def test_readme_serve_command_answers_from_the_fresh_environment(champion, venv, finished_run,
                                                                  tmp_path):
    argv, path, payload = readme_serve_example()
    port = free_port()
    argv[0], argv[argv.index("-p") + 1] = str(venv / "bin/mlflow"), str(port)
    env = bare_env(venv, MLFLOW_TRACKING_URI=finished_run.tracking_uri,
                   MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    with server_process(argv, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env=env,
                        cwd=tmp_path):
        status, answer = post(port, path, payload)
        assert status == 200, answer
        (row,) = answer["predictions"]
        assert max(row, key=row.get) == "zero"
        frame = champion["frame"].head(20)
        status, answer = post(port, "/invocations", {"dataframe_split": {
            "columns": list(frame.columns),
            "data": [[np.asarray(v).tolist() if c == "image" else v for c, v in row.items()]
                     for row in frame.to_dict("records")]}})
    assert status == 200, answer
    got = pd.DataFrame(answer["predictions"]).to_numpy()
    np.testing.assert_allclose(got, champion["expected"][:20], atol=1e-5)
