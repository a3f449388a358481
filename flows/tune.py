"""`mmpipe tune`: Optuna's TPE search over config settings, on the sweep's engine.

Each trial is one cell (`flows/sweep.py`): the pipeline up to training, nested under the tune's
MLflow run, through the shared stage cache (trials that differ only in training settings reuse
every upstream stage). Cells run on the flow's Dask cluster, as many trials at once as it has
workers, or one by one (`--sequential`). The objective (`tune.metric`, or `--objective`) is a
validation figure, never a test one: the trained classifier's val accuracy, or for robustness
the mean or lowest point of its robustness curves on the val rows (`val_robust_mean`,
`val_robust_worst`), which set the graceful-fusion defaults (docs/decisions.md).

Pruning: while a trial trains, every epoch's validation accuracy is reported to the study
(`mmcore.stages.training.EPOCH_LISTENER`), and Optuna's median pruner stops a trial that is
below the median of earlier trials at the same epoch. It stops by raising `TrialPruned` inside
the training stage, so nothing of the pruned trial is cached. The curve is clean val accuracy
whatever the objective (robustness is measured once, after training): with a robust objective,
set `tune.prune_after_trials` high enough that pruning does not end a robust trial that learns
slowly.

The study lives in the run folder's SQLite (`<run_dir>/tune/optuna.db`, Optuna's RDB storage)
or at `--storage`: running again with the same `--study-name` resumes it and adds trials. The
tune run gets the best trial's whole config (`best_config.yaml`, for `mmpipe run --config`), the
parameter importances (Optuna's fANOVA evaluator) and the trials table.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.sweep import executor, registration
from mmcore.config import STAGES, load_config
from mmcore.experiments.tuning import (
    TuneSection,
    best_config,
    override,
    plan_search,
    suggest,
)
from tasks.engine import recovery
from tasks.engine.results import SERIALIZER as JSON_RESULTS
from tasks.tracking import runs
from tasks.tracking.experiment_runs import log_tune_results, start_tune_run

THROUGH_TRAINING = list(STAGES[: STAGES.index("training") + 1])  # a trial runs no testing


@dataclass(frozen=True)
class TrialCell:
    """One trial as a sweep cell: its number and storage id, and its sampled overrides."""

    number: int
    trial_id: int
    overrides: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"trial {self.number}: " + " ".join(self.overrides)


def storage_url(run_dir: str) -> str:
    """The run folder's study database (Optuna's RDB storage on SQLite)."""
    folder = Path(run_dir).resolve() / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def pruner(section: TuneSection):
    """Optuna's median pruner: a trial stops once its val_acc at an epoch is below the median
    of earlier trials' at that epoch, after `prune_after_trials` trials and its own
    `prune_warmup_epochs` epochs. A study does not store its pruner: every process that loads
    the study passes it."""
    import optuna

    # Optuna prunes from step n_warmup_steps on; epochs are reported counted from 1
    return optuna.pruners.MedianPruner(n_startup_trials=section.prune_after_trials,
                                       n_warmup_steps=section.prune_warmup_epochs + 1)


def run_trial(config: str | None, overrides: list[str], parent: str, storage: str, study: str,
              section: TuneSection, cell: TrialCell) -> dict[str, Any]:
    """One trial, on whichever process runs the cell: the pipeline through training, each
    epoch's val_acc reported to the study, stopped by the pruner with `TrialPruned`; its value
    is `section.metric` of the kept epoch."""
    import optuna

    from flows.pipeline import pipeline
    from mmcore.stages.training import EPOCH_LISTENER

    trial = optuna.Trial(optuna.load_study(study_name=study, storage=storage,
                                           pruner=pruner(section)), cell.trial_id)
    metric = section.metric
    epochs: list[int] = []

    def report(epoch: int, record: dict[str, float]) -> None:
        epochs.append(epoch)
        trial.report(record["val_acc"], epoch)  # the per-epoch curve fit selects on
        if trial.should_prune():
            raise optuna.TrialPruned(f"trial {cell.number} pruned after epoch {epoch}: "
                                     f"val_acc {record['val_acc']:.4f} below the median")

    result = {"number": cell.number, "overrides": list(cell.overrides)}
    token = EPOCH_LISTENER.set(report)
    try:
        summary = pipeline(config=config, stages=THROUGH_TRAINING, role="tune",
                           overrides=[*overrides, *cell.overrides, *registration(False)],
                           parent_run_id=parent, run_name=cell.label)
    except optuna.TrialPruned as exc:
        return {**result, "state": "PRUNED", "epochs": len(epochs), "note": str(exc)}
    except Exception as exc:  # one trial's failure is the study's record, not the tune's end
        return {**result, "state": "FAIL", "epochs": len(epochs),
                "note": f"{type(exc).__name__}: {exc}"}
    finally:
        EPOCH_LISTENER.reset(token)
        trial.set_user_attr("epochs_run", len(epochs))
    val = summary["val"] or {}
    if metric not in val:
        return {**result, "state": "FAIL", "epochs": len(epochs),
                "note": f"the trial reports no {metric} (val_acc_after_calibration: late fusion "
                        "or a fallback; val_robust_*: multimodal trials)"}
    return {**result, "state": "COMPLETE", "value": val[metric], "epochs": len(epochs),
            "run_id": summary["parent_run_id"]}


def _tune_run_name() -> str:
    params = flow_run.parameters
    return f"tune · {load_config(params.get('config'), params.get('overrides')).name}"


@flow(name="mmpipe-tune", flow_run_name=_tune_run_name,
      persist_result=False,  # no pickles: tasks/engine/results.py
      result_serializer=JSON_RESULTS)  # a failed run's exception: JSON too
def tune(config: str | None = None, overrides: list[str] | None = None,
         params: list[str] | None = None, trials: int | None = None,
         study_name: str | None = None, storage: str | None = None, parallel: int = 1,
         executor_name: str = "sequential (this process)",
         metric: str | None = None) -> dict[str, Any]:
    """Add `trials` trials (default: the config's `tune.trials`) to the study `study_name`
    (created, or resumed), `parallel` at a time, each valued by `metric` (default: the config's
    `tune.metric`); returns the best trial, the importances and where the best config was
    written. Run it through `flows.sweep.on_runner` for Dask."""
    import optuna

    overrides = list(overrides or [])
    space, section = plan_search(config, overrides, list(params or []))
    if metric is not None:
        section = section.model_copy(update={"metric": metric})
    cfg = load_config(config, [*overrides, *registration(False)])  # as each trial
    trials = trials or section.trials
    study_name = study_name or f"{cfg.name}-tune"
    storage = storage or storage_url(cfg.run_dir)
    logger = get_run_logger()
    with recovery.recorded(cfg, flow_run.get_id(), logger):  # first: after crashes
        study = optuna.create_study(
            study_name=study_name, storage=storage, direction="maximize", load_if_exists=True,
            # seeded by the trials already there, so a resumed study samples new points
            sampler=optuna.samplers.TPESampler(seed=cfg.seed + len(_trials_of(study_name,
                                                                              storage))),
            pruner=pruner(section))
        spec = {k: p.model_dump_json(exclude_none=True) for k, p in space.items()}
        parent = start_tune_run(cfg, flow_run.get_id(), study_name, spec, trials, storage,
                                executor_name)
        logger.info("tune: %d trials of study %r (%d there already) on %s, objective %s",
                    trials, study_name, len(study.trials), executor_name, section.metric)
        run_cell = functools.partial(run_trial, config, overrides, parent, storage, study_name,
                                     section)
        with runs.ended(cfg, parent):
            results = []
            while len(results) < trials:
                asked = [study.ask() for _ in range(min(parallel, trials - len(results)))]
                cells = [TrialCell(t.number, t._trial_id,
                                   tuple(override(k, v) for k, v in suggest(t, space).items()))
                         for t in asked]
                for result in executor()(run_cell, cells):
                    study.tell(result["number"], result.get("value"),
                               state=optuna.trial.TrialState[result["state"]])
                    logger.info("trial %d: %s %s", result["number"], result["state"],
                                result.get("value", result.get("note", "")))
                    results.append(result)
            summary = _summarise(study, config, overrides, Path(cfg.run_dir) / "tune" / parent)
            run_url = log_tune_results(cfg, parent, summary.pop("trials_table"),
                                       summary["best"], summary.pop("files"))
    return {"config": cfg.name, "study": study_name, "storage": storage, "tune_run_id": parent,
            "run_url": run_url, "objective": section.metric, "trials": results, **summary}


def _trials_of(study_name: str, storage: str) -> list[Any]:
    """The study's trials so far; none if it does not exist yet."""
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:
        return []


def _summarise(study, config: str | None, overrides: list[str], out: Path) -> dict[str, Any]:
    """The best trial, its config as `best_config.yaml`, the parameter importances (fANOVA;
    none before two complete trials that differ) and the trials table, written to `out`."""
    import optuna

    out.mkdir(parents=True, exist_ok=True)
    best = study.best_trial
    (out / "best_config.yaml").write_text(best_config(config, overrides, best.params))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):  # too few complete trials, or none that differ
        importances = {}
    (out / "importances.json").write_text(json.dumps(importances, indent=1))
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
    table["state"] = table["state"].astype(str)
    table.to_csv(out / "trials.csv", index=False)
    return {"best": {"number": best.number, "value": best.value, "params": best.params},
            "importances": importances, "complete": len(complete),
            "best_config": str(out / "best_config.yaml"), "trials_table": table,
            "files": [out / "best_config.yaml", out / "importances.json", out / "trials.csv"]}


def run_tune(config: str | None, overrides: list[str], params: list[str], trials: int | None,
             study_name: str | None, storage: str | None, address: str | None = None,
             workers: int | None = None, sequential: bool = False,
             metric: str | None = None) -> dict[str, Any]:
    """The tune on a LocalCluster (default; as many trials at once as workers), the cluster at
    `address`, or sequentially."""
    from flows.sweep import on_runner, where

    parallel = 1 if sequential else workers or _cluster_workers(address)
    return on_runner(tune, address, workers, sequential)(
        config=config, overrides=overrides, params=params, trials=trials,
        study_name=study_name, storage=storage, parallel=parallel,
        executor_name=where(address, workers, sequential), metric=metric)


def _cluster_workers(address: str | None) -> int:
    """Trials at once on a cluster: a LocalCluster's workers (one per core); 2 elsewhere."""
    from tasks.parallel.dask_cluster import local_workers

    return local_workers() if address is None else 2
