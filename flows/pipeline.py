"""The pipeline flow: the five stages in order, each through its cache.

`stages` picks which stages run; earlier stages they depend on are taken from the cache for the
same config, or run first (and the log says so) when their output is missing. `refresh` forces a
stage and every selected stage after it to run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for

from mmcore.config import STAGES, PipelineConfig, load_config
from mmcore.learning_plan import planned_label
from mmcore.uris import public_uri
from tasks.engine import recovery
from tasks.engine.keys import StageRef
from tasks.engine.results import SERIALIZER as JSON_RESULTS
from tasks.stages import preprocessing, table
from tasks.tracking import alerts, model_registry, nightly, run_summary, runs
from tasks.tracking.experiment_runs import rounded


def select(stages: list[str] | None, refresh: list[str] | None) -> tuple[list[str], int | None]:
    """Validated stage selection, and the index from which stages are refreshed."""
    wanted = list(stages or STAGES)
    unknown = [s for s in [*wanted, *(refresh or [])] if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    first_refresh = min((STAGES.index(s) for s in refresh or []), default=None)
    return [s for s in STAGES if s in wanted], first_refresh


def _flow_run_name() -> str:
    """Flow runs named by config and mode (`default · multimodal late · image+text`), not
    Prefect's random names; a comparison's or sweep's cell by the name it is given."""
    params = flow_run.parameters
    if params.get("run_name"):
        return params["run_name"]
    cfg = load_config(params.get("config"), params.get("overrides"))
    return f"{cfg.name} · {planned_label(cfg.training)}"


def flow_run_tags(cfg: PipelineConfig, role: str) -> list[str]:
    """What a pipeline flow run is, as Prefect tags to filter on: config, mode, the operator or
    modality, seed, and who ran it (`pipeline`, `comparison`, `sweep`)."""
    what = (f"fusion:{cfg.training.fusion}" if cfg.training.mode == "multimodal"
            else f"modality:{cfg.training.modality}")
    return ["mmpipe", cfg.name, cfg.training.mode, what, f"seed:{cfg.seed}", role]


@flow(name="mmpipe", log_prints=True, flow_run_name=_flow_run_name,
      persist_result=False,  # its caller gets the summary; never pickled
      result_serializer=JSON_RESULTS,  # a failed run's exception: JSON too
      on_failure=[alerts.on_flow_failure])  # the `mmpipe.run.failed` event
def pipeline(config: str | None = None, overrides: list[str] | None = None,
             stages: list[str] | None = None, refresh: list[str] | None = None,
             role: str = "pipeline", parent_run_id: str | None = None,
             run_name: str | None = None) -> dict[str, Any]:
    """Run the pipeline for a config file (or the defaults) plus `key=value` overrides. `role`
    says who runs it (`pipeline`, `comparison`, `sweep`): only the pipeline's own default-mode
    runs move the registry's aliases. `parent_run_id`/`run_name`: nest its MLflow run under
    another (a comparison's cell)."""
    logger = get_run_logger()
    cfg = load_config(config, overrides)
    wanted, first_refresh = select(stages, refresh)
    with recovery.recorded(cfg, flow_run.get_id(), logger):  # first: after crashed runs
        preprocessing.check_batches(cfg, accept_changes="preprocessing" in (refresh or []))
        tag_flow_run(flow_run_tags(cfg, role))
        parent = runs.start_parent_run(
            cfg, flow_run.get_id(), run_name or f"{cfg.name} · {cfg.training.mode}",
            {"stages": ",".join(wanted)}, parent=parent_run_id)
        refs: dict[str, StageRef] = {}
        batches = None
        report: dict[str, dict[str, str]] = {}
        with runs.ended(cfg, parent):
            for index, stage in enumerate(STAGES[: STAGES.index(wanted[-1]) + 1]):
                if stage not in wanted:
                    ref = table.cached(stage, cfg, refs)
                    if ref is not None:
                        refs[stage] = ref
                        report[stage] = {"state": "reused", "key": ref.key, "path": ref.path}
                        continue
                    logger.warning("%s output is missing for this config: running %s first",
                                   stage, stage)
                refresh_it = first_refresh is not None and index >= first_refresh
                ref, state = table.run(stage, cfg, dict(refs), parent, refresh=refresh_it)
                refs[stage] = ref
                report[stage] = {"state": state, "key": ref.key, "path": ref.path}
                if stage == "preprocessing":
                    batches = preprocessing.record_batches(cfg, ref, state, parent)
            model = _register(cfg, refs, role, parent)
            metrics = refs["testing"].summary["metrics"] if "testing" in refs else {}
            # Rounded on the parent, the row a reviewer reads (the testing run keeps them whole).
            runs.log_metrics(cfg, parent, {k: rounded(v) for k, v in metrics.items()})
            plan = refs["training"].summary["plan"] if "training" in refs else None
            run_url = _describe(cfg, parent, refs, report, metrics, model, run_name)
    return {"config": cfg.name, "run_dir": cfg.run_dir, "parent_run_id": parent,
            "run_url": run_url,
            "tracking_uri": public_uri(runs.tracking_uri(cfg.run_dir)), "stages": report,
            "metrics": metrics, "plan": plan,
            # the kept epoch's validation figures (what `mmpipe tune` optimises)
            "val": refs["training"].summary.get("val") if "training" in refs else None,
            "labels_used": plan["labels_used"] if plan else None,
            "quality": refs["preprocessing"].summary["metrics"], "batches": batches,
            "comparison": refs["testing"].summary.get("comparison") if "testing" in refs
            else None, "model": model}


def _describe(cfg: PipelineConfig, parent: str, refs: dict[str, StageRef],
              report: dict[str, dict[str, str]], metrics: dict[str, float],
              model: dict[str, Any] | None, name: str | None) -> str:
    """Name and describe the MLflow parent run, and publish the Prefect flow run's Markdown
    artifact; each links to the other. Returns the parent run's UI URL."""
    states = {stage: info["state"] for stage, info in report.items()}
    labels = (model_registry.labels_used(refs["training"].summary["plan"],
                                         refs["training"].summary["modalities"])
              if "training" in refs else None)
    # url_for gives the route Prefect's own log lines link (runtime's ui_url uses another).
    flow_run_url = public_uri(url_for("flow-run", obj_id=flow_run.get_id()))
    run_url = run_summary.describe_parent(cfg, parent, refs, states, metrics, model,
                                          flow_run_url, labels, name)
    create_markdown_artifact(run_summary.flow_run_markdown(cfg, run_url, metrics, states, model),
                             key=run_summary.artifact_key(cfg),
                             description=f"{cfg.name}: metrics and the MLflow run")
    return run_url


def tag_flow_run(tags: list[str]) -> None:
    """Tags on this flow run, for filtering in Prefect's UI."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.get_id(), tags=sorted(set(tags)))


def _register(cfg: PipelineConfig, refs: dict[str, StageRef], role: str, parent: str,
              ) -> dict[str, Any] | None:
    """The trained model in the registry: a version after training; after testing, the night's
    drift checks, the gate against the champion and its decision (tasks/tracking/nightly.py)."""
    registration = (model_registry.register_candidate(cfg, refs, role)
                    if "training" in refs else None)
    if registration is None:
        return None
    decision, night = (nightly.night(cfg, refs, role, parent) if "testing" in refs
                       else (None, None))
    return {"name": cfg.training.model_name, "version": registration.version,
            "new_version": registration.created, "candidate": registration.candidate,
            "champion": decision.champion if decision else None,
            "decision": decision.reason if decision else "not tested in this run",
            "night": vars(night) if night else None,
            "night_markdown": night.markdown() if night else None}
