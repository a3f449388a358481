"""`mmpipe tune`: search spaces as data, and a real search (real Prefect flows, real MLflow
SQLite store read back, the Optuna study read back from the run folder's SQLite) that finds the
better of two learning rates, prunes a hopeless trial early, resumes, and values a trial by its
robustness on the val rows when asked to."""

from __future__ import annotations

import shutil

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from mmcore.config import ConfigError, load_config
from mmcore.experiments.tuning import Param, parse_space, plan_search

TINY = ["data.limit=300", "features.image_epochs=10", "features.text_epochs=10",
        "features.image_channels=8", "features.text_hidden=16", "shared_space.epochs=30",
        "training.epochs=6", "training.fusion=concat", "training.corruption_copies=0"]
GOOD, HOPELESS = 0.05, 1e-7  # a learning rate that learns in 6 epochs, and one that cannot


def test_search_spaces_parse_and_bad_ones_are_one_line_errors():
    space = parse_space(["training.lr=log:1e-4:1e-1", "training.hidden=int:16:64",
                         "training.fusion=cat:late,concat",
                         "training.modality_dropout=float:0:0.5"])
    assert space["training.lr"] == Param(kind="log", low=1e-4, high=0.1)
    assert space["training.hidden"].extremes() == [16, 64]
    assert space["training.fusion"].choices == ("late", "concat")
    for item, message in [("training.lr", "expected key=kind:spec"),
                          ("training.lr=log:0:1", "LOW > 0"),
                          ("training.lr=float:1:0.5", "LOW < HIGH"),
                          ("training.hidden=int:1.5:4", "whole"),
                          ("training.lr=exp:1:2", "'float', 'log', 'int' or 'cat'"),
                          ("seed=int:0:3", "cannot be searched")]:
        with pytest.raises(ConfigError, match=message):
            parse_space([item])


def test_plan_search_checks_every_value_against_the_config(tmp_path):
    with pytest.raises(ConfigError, match="training.hidden"):
        plan_search(None, [], ["training.hidden=int:1:8"])  # hidden >= 2
    with pytest.raises(ConfigError, match="nothing to search"):
        plan_search(None, [], [])
    path = tmp_path / "tuned.yaml"
    path.write_text("name: tuned\ntune:\n  trials: 3\n  params:\n"
                    "    training.lr: log:1e-3:1e-2\n")
    space, section = plan_search(str(path), [], ["training.hidden=cat:16,32"])
    assert set(space) == {"training.lr", "training.hidden"} and section.trials == 3
    assert load_config(str(path)).name == "tuned"  # the section is no setting


@pytest.mark.slow  # 9 trials through the real flow: ~100 s on a busy 2-core machine
def test_tune_finds_the_better_rate_prunes_early_and_resumes(tmp_path, prefect_harness,
                                                             mlflow_db_template):
    import optuna

    from flows.tune import run_tune

    shutil.copy(mlflow_db_template, tmp_path / "mlflow.db")
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"tune": {"prune_after_trials": 1,
                                               "prune_warmup_epochs": 1}}))
    overrides = [*TINY, f"run_dir={tmp_path}"]

    def tune(param: str, trials: int, study: str) -> dict:
        return run_tune(str(config), overrides, [param], trials=trials, study_name=study,
                        storage=None, sequential=True)

    # A rate that learns in 6 epochs against one that cannot: the search finds the first.
    result = tune(f"training.lr=cat:{GOOD},{HOPELESS}", 4, "lr")
    assert result["best"]["params"] == {"training.lr": GOOD}
    tuned = load_config(result["best_config"])  # loadable by `mmpipe run --config`
    assert tuned.training.lr == GOOD and tuned.training.epochs == 6
    assert str(tmp_path / "tune" / "optuna.db") in result["storage"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = client.search_runs(
        [client.get_run(result["tune_run_id"]).info.experiment_id],
        f"tags.{MLFLOW_PARENT_RUN_ID} = '{result['tune_run_id']}'")
    assert len(children) == 4  # one child run per trial
    artifacts = {a.path for a in client.list_artifacts(result["tune_run_id"])}
    assert {"best_config.yaml", "importances.json", "trials.csv"} <= artifacts

    # A study resumed with a hopeless range: below the first trial's curve, it stops early.
    first = tune(f"training.lr=log:{GOOD}:{2 * GOOD}", 1, "prune")["trials"]
    assert [(t["state"], t["epochs"]) for t in first] == [("COMPLETE", 6)]
    second = tune(f"training.lr=log:{HOPELESS}:{2 * HOPELESS}", 1, "prune")["trials"]
    assert second[0]["state"] == "PRUNED" and 1 < second[0]["epochs"] < 6
    study = optuna.load_study(study_name="prune", storage=result["storage"])
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert study.trials[1].user_attrs["epochs_run"] == second[0]["epochs"]

    # The robust objective: a trial's value is the mean of its robustness curves on the val
    # rows, as its training stage logged it beside the lowest point and the clean accuracy.
    robust = run_tune(str(config), [*overrides, "training.corruption_copies=1"],
                      ["training.modality_dropout=float:0:0.4"], trials=1, study_name="robust",
                      storage=None, sequential=True, metric="val_robust_mean")
    assert robust["objective"] == "val_robust_mean"
    [trial] = robust["trials"]
    [stage] = client.search_runs(
        [client.get_run(trial["run_id"]).info.experiment_id],
        f"tags.{MLFLOW_PARENT_RUN_ID} = '{trial['run_id']}' and tags.stage = 'training'")
    logged = stage.data.metrics
    assert trial["value"] == logged["summary/val_robust_mean"]
    assert logged["summary/val_robust_worst"] < trial["value"] < logged["summary/val_acc"]
