"""What a reviewer reads about one pipeline run: the parent MLflow run's name, tags and Markdown
description, and the Markdown artifact on the Prefect flow run. Each links to the other.

Names say what ran: `default · multimodal late · image+text`, `default · cross_modal ·
image->text`; stage runs are `1-preprocessing` … `5-testing`.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from mmcore.config import STAGES, PipelineConfig
from mmcore.learning_plan import mode_label
from mmcore.uris import public_uri
from tasks.tracking.runs import RUNS_VIEW_KEY, stage_run_name, tracking_uri

if TYPE_CHECKING:  # annotations only: tracking never imports the engine at run time
    from tasks.engine.keys import StageRef

# Where people open the MLflow UI on a local store: the command the CLI prints uses this port.
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
# MLflow 3.17's UI chooses its GenAI or model-training views per browser (this URL parameter,
# else a stored choice that defaults to GenAI), not per experiment: links carry the choice.
RUNS_VIEW = "?workflowType=machine_learning"


def run_name(cfg: PipelineConfig, plan: dict[str, Any] | None) -> str:
    """`default · multimodal late · image+text` (`mmcore.learning_plan.mode_label`); the
    configured mode alone when training did not run in this pipeline run."""
    if plan is None:
        return f"{cfg.name} · {cfg.training.mode}"
    fusion = cfg.training.fusion if plan["mode"] == "multimodal" else None
    return f"{cfg.name} · {mode_label(plan['mode'], plan['train'], plan['test'], fusion)}"


def mlflow_ui(cfg: PipelineConfig) -> str:
    """Base URL of the MLflow UI for this run directory's store."""
    uri = tracking_uri(cfg.run_dir)
    if uri.startswith(("http://", "https://")):
        return public_uri(uri).rstrip("/")  # a link: never with credentials
    return os.environ.get("MMPIPE_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI).rstrip("/")


def run_link(experiment_id: str, run_id: str) -> str:
    """The UI route of a run (relative: it works on any MLflow UI host)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}{RUNS_VIEW}"


def experiment_link(experiment_id: str) -> str:
    """The UI route of an experiment's runs table, with mmpipe's columns (test accuracy, mode,
    fusion, seed: `runs.RUNS_VIEW_STATE`)."""
    return (f"#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}&"
            f"{RUNS_VIEW.lstrip('?')}")


def artifact_link(experiment_id: str, run_id: str, path: str) -> str:
    """The UI route of one artifact of a run (its preview: a table, an image)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}{RUNS_VIEW}"


def model_link(name: str, version: str | None = None) -> str:
    """The UI route of a registered model (or one of its versions), in the model-training view
    as every link mmpipe writes."""
    route = f"#/models/{name}" + (f"/versions/{version}" if version else "")
    return route + RUNS_VIEW


def parent_tags(cfg: PipelineConfig, refs: dict[str, StageRef], states: dict[str, str],
                labels_used: list[str] | None) -> dict[str, str]:
    plan = refs["training"].summary["plan"] if "training" in refs else None
    counts = {s: list(states.values()).count(s) for s in ("hit", "miss", "reused")}
    tags = {"data.source": cfg.data.source,
            "cache": " · ".join(f"{n} {s}" for s, n in counts.items() if n)}
    if plan is not None:
        tags |= {"mode": plan["mode"], "train_modalities": "+".join(plan["train"]),
                 "test_modalities": "+".join(plan["test"]),
                 "fusion": cfg.training.fusion if plan["mode"] == "multimodal" else "none"}
    if labels_used:
        tags["labels_used"] = "+".join(labels_used)
    return tags


def _metrics_table(metrics: dict[str, float]) -> list[str]:
    rows = [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())
            if isinstance(v, int | float)]
    return ["| metric | value |", "|---|---|", *rows] if rows else ["No test metrics."]


def parent_description(cfg: PipelineConfig, experiment_id: str, children: dict[str, str],
                       states: dict[str, str], metrics: dict[str, float],
                       model: dict[str, Any] | None, flow_run_url: str | None) -> str:
    """The parent run's Markdown description: what ran, how it scored, where everything is."""
    lines = [f"**{cfg.name}**: {states and ', '.join(f'{s} {v}' for s, v in states.items())}",
             ""]
    if flow_run_url:
        lines += [f"Prefect flow run: [{flow_run_url}]({flow_run_url})", ""]
    lines += ["Stage runs: " + " · ".join(
        f"[{stage_run_name(s)}]({run_link(experiment_id, children[s])})"
        for s in STAGES if s in children), ""]
    if model:
        lines += [f"Model: [{model['name']} version {model['version']}]"
                  f"({model_link(model['name'], model['version'])}); champion: "
                  f"{model['decision']}", ""]
        if model.get("night_markdown"):
            lines += [model["night_markdown"], ""]
    lines += _metrics_table(metrics)
    return "\n".join(lines)


def describe_parent(cfg: PipelineConfig, parent_run_id: str, refs: dict[str, StageRef],
                    states: dict[str, str], metrics: dict[str, float],
                    model: dict[str, Any] | None, flow_run_url: str | None,
                    labels_used: list[str] | None, name: str | None = None) -> str:
    """Name (`name`, else `run_name`), tag and describe the parent run once its stages ran;
    returns its UI URL."""
    client = MlflowClient(tracking_uri(cfg.run_dir))
    parent = client.get_run(parent_run_id)
    experiment = parent.info.experiment_id
    children = {r.data.tags["stage"]: r.info.run_id for r in client.search_runs(
        [experiment], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'")}
    plan = refs["training"].summary["plan"] if "training" in refs else None
    client.update_run(parent_run_id, name=name or run_name(cfg, plan))
    tags = parent_tags(cfg, refs, states, labels_used)
    tags[MLFLOW_RUN_NOTE] = parent_description(cfg, experiment, children, states, metrics,
                                               model, flow_run_url)
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)
    return f"{mlflow_ui(cfg)}/{run_link(experiment, parent_run_id)}"


def flow_run_markdown(cfg: PipelineConfig, run_url: str, metrics: dict[str, float],
                      states: dict[str, str], model: dict[str, Any] | None) -> str:
    """The Prefect flow run's artifact: the metrics table and the way back to MLflow."""
    lines = [f"# {cfg.name}", "", f"MLflow run: [{run_url}]({run_url})", "",
             "Stages: " + ", ".join(f"{s} {v}" for s, v in states.items()), ""]
    if model:
        lines += [f"Model: {model['name']} version {model['version']} "
                  f"(champion: {model['decision']})", ""]
        if model.get("night_markdown"):
            lines += [model["night_markdown"], ""]
    return "\n".join([*lines, *_metrics_table(metrics)])


def artifact_key(cfg: PipelineConfig) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return "mmpipe-" + (re.sub(r"[^a-z0-9-]+", "-", cfg.name.lower()).strip("-") or "run")
