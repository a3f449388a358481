"""Registry semantics against a real MLflow SQLite registry in a temp dir: tags, description,
`@candidate`, `@champion`, roles that never move aliases, no version for an unchanged model."""

from __future__ import annotations

import shutil
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mmcore.config import GateConfig
from mmcore.nightly import GateResult, gate
from tasks.tracking import model_registry as reg
from tasks.tracking.runs import using_tracking_uri

NAME = "mmpipe-classifier"


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"zero": [1.0] * len(model_input)})


@pytest.fixture(scope="module")
def logged(tmp_path_factory, mlflow_db_template) -> tuple[str, str]:
    """One logged model to register versions of (logging a real chain is the pipeline tests'
    job; here the content digest is what tells versions apart), and its store."""
    folder = tmp_path_factory.mktemp("registry")
    shutil.copy(mlflow_db_template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment(
        "registry", artifact_location=(folder / "artifacts").as_uri())
    with using_tracking_uri(uri), mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(),
                                       pip_requirements=[])
    return uri, info.model_uri, run.info.run_id


@pytest.fixture
def store(logged, tmp_path) -> tuple[str, str, str]:
    """A fresh registry (a copy of the store holding the logged model)."""
    uri, model_uri, run_id = logged
    db = tmp_path / "mlflow.db"
    shutil.copy(uri.removeprefix("sqlite:///"), db)
    return f"sqlite:///{db}", model_uri, run_id


def facts(run_id: str, **changes) -> reg.VersionFacts:
    base = reg.VersionFacts(
        mode="multimodal", train_modalities=["image", "text"],
        test_modalities=["image", "text"], fusion="late", data_digest="data-a",
        config_digest="cfg-1", config_name="default", labels_used=["image", "text"],
        content_digest="weights-1", role="pipeline", default_mode=True, run_id=run_id)
    return replace(base, **changes)


def aliases(uri: str) -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient(uri).get_registered_model(NAME).aliases.items()}


def register(store, accuracy: float | None = None, gate: GateResult | None = None, **changes):
    uri, model_uri, run_id = store
    f = facts(run_id, **changes)
    registration = reg.register_version(uri, NAME, model_uri, f)
    decision = (reg.decide_champion(uri, NAME, registration.version, accuracy, f.role,
                                    f.default_mode, gate) if accuracy is not None else None)
    return registration, decision


def gate_result(champion_right: int, challenger_right: int) -> GateResult:
    """The gate on 200 rows where each model gets its first N right."""
    rows = np.arange(200)
    return gate(rows < champion_right, rows < challenger_right, GateConfig(), None)


def test_first_default_version_is_candidate_and_champion_with_tags_and_description(store):
    uri = store[0]
    registration, decision = register(store, 0.95)
    assert (registration.version, registration.created, registration.candidate) == ("1", True,
                                                                                    True)
    assert decision.moved and decision.reason == "promoted: first champion"
    assert aliases(uri) == {"candidate": "1", "champion": "1"}
    mv = MlflowClient(uri).get_model_version(NAME, "1")
    # Few tags (what a reviewer filters on, what the decisions read); the rest is described.
    assert mv.tags == {
        "mode": "multimodal", "fusion": "late", "registered_by": "pipeline",
        "data.digest": "data-a", "content.digest": "weights-1", "test.accuracy": "0.950000",
        "champion.accuracy": "0.950000"}
    assert mv.description.startswith("multimodal · late fusion: trained on image+text")
    assert "| labels used&emsp; | image+text |" in mv.description
    assert "- test accuracy: 0.9500" in mv.description
    assert "- champion decision: promoted: first champion" in mv.description
    model = MlflowClient(uri).get_registered_model(NAME)
    assert "**`@champion`**: the version that serves" in model.description


def test_an_unchanged_model_adds_no_version(store):
    register(store, 0.95)
    again, decision = register(store, 0.95)
    assert (again.version, again.created) == ("1", False)
    assert decision.reason == "already champion"
    assert len(MlflowClient(store[0]).search_model_versions(f"name = '{NAME}'")) == 1


def test_champion_moves_only_for_a_candidate_that_passes_the_gate_on_the_same_rows(store):
    uri = store[0]
    register(store, 0.95)
    _, unscored = register(store, 0.99, content_digest="weights-2")
    assert aliases(uri) == {"candidate": "2", "champion": "1"}
    assert unscored.reason.startswith("kept v1: not compared with it on the same rows")
    assert "`mmpipe promote 2`" in unscored.reason
    _, level = register(store, 0.95, gate_result(150, 154), content_digest="weights-3")
    assert aliases(uri) == {"candidate": "3", "champion": "1"}
    assert level.reason == ("kept v1 on 200 rows, 0.7700 vs 0.7500: gain +0.0200 not "
                            "significant: McNemar p 0.125 > 0.05")
    _, better = register(store, 0.96, gate_result(150, 180), content_digest="weights-4")
    assert aliases(uri) == {"candidate": "4", "champion": "4", "previous_champion": "1"}
    assert better.reason.startswith("promoted over v1 on 200 rows, 0.9000 vs 0.7500: gain")
    described = MlflowClient(uri).get_model_version(NAME, "3").description
    assert f"- champion decision: {level.reason}" in described
    assert MlflowClient(uri).get_model_version(NAME, "4").tags["champion.accuracy"] == "0.960000"


@pytest.mark.parametrize("changes", [
    {"role": "comparison"},  # a comparison cell in the default mode
    {"role": "sweep"},
    {"mode": "cross_modal", "train_modalities": ["image"], "test_modalities": ["text"],
     "fusion": "none", "default_mode": False},  # the pipeline, run in another mode
])
def test_comparisons_sweeps_and_other_modes_never_move_aliases(store, changes):
    uri = store[0]
    register(store, 0.90)
    registration, decision = register(store, 0.99, content_digest="weights-2", **changes)
    assert registration.created and not registration.candidate
    assert not decision.moved and decision.reason.startswith("not considered")
    assert aliases(uri) == {"candidate": "1", "champion": "1"}
    assert "champion decision" not in MlflowClient(uri).get_model_version(NAME, "2").description
    assert MlflowClient(uri).get_model_version(NAME, "2").tags["registered_by"] == \
        changes.get("role", "pipeline")


def test_a_comparison_reusing_the_champion_leaves_its_decision_alone(store):
    uri = store[0]
    register(store, 0.95)
    again, decision = register(store, 0.95, role="comparison")
    assert (again.version, again.created, decision.considered) == ("1", False, False)
    described = MlflowClient(uri).get_model_version(NAME, "1").description
    assert "- champion decision: promoted: first champion" in described


def test_promote_moves_the_champion_by_hand_and_rejects_unknown_versions(store):
    uri = store[0]
    register(store, 0.95)
    register(store, 0.80, content_digest="weights-2")
    mv = reg.promote(uri, NAME, "2")
    assert aliases(uri) == {"candidate": "2", "champion": "2", "previous_champion": "1"}
    assert "- promoted to champion: by hand (`mmpipe promote`)" in mv.description
    assert "- test accuracy: 0.8000" in mv.description
    with pytest.raises(ValueError, match="has no version '7'"):
        reg.promote(uri, NAME, "7")


def test_default_mode_means_every_modality_of_the_data():
    both = ["image", "text"]
    assert reg.is_default_mode({"mode": "multimodal", "train": both, "test": both}, both)
    assert not reg.is_default_mode({"mode": "unimodal", "train": ["image"],
                                    "test": ["image"]}, both)
    assert not reg.is_default_mode({"mode": "cross_modal", "train": ["image"],
                                    "test": ["text"]}, both)
    # A one-modality dataset (MNIST alone): multimodal falls back to unimodal on all of it.
    assert reg.is_default_mode({"mode": "unimodal", "train": ["image"], "test": ["image"]},
                               ["image"])
