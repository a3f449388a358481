"""MLflow for a comparison of learning modes: one parent run per `mmpipe compare`, each cell a
child run (the cell's pipeline run, its stages below it), and on the parent the transfer matrix
(`log_table` + heatmap), the fusion operators side by side, the robustness plots and
`report.json`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mmcore.config import PipelineConfig
from tasks.tracking import runs


def start_compare_run(cfg: PipelineConfig, flow_run_id: str | None, seeds: list[int],
                      fusions: list[str]) -> str:
    """The comparison's parent run: the base config as params; seeds and operators as tags."""
    client = runs.client_for(cfg)
    seeds_said = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    fusions_said = fusions[0] if len(fusions) == 1 else f"{len(fusions)} fusion operators"
    name = f"compare · {cfg.name} · {seeds_said} · {fusions_said}"
    run = client.create_run(runs.experiment_id(client, cfg), run_name=name,
                            tags={"kind": "compare", "prefect.flow_run_id": flow_run_id or "",
                                  "git.commit": runs.git_commit(),
                                  "config.digest": cfg.digest(),
                                  "compare.seeds": ",".join(map(str, seeds)),
                                  "compare.fusions": ",".join(fusions)})
    runs.log_params_and_metrics(client, run.info.run_id, cfg.flat())
    return run.info.run_id


def tag_cell(cfg: PipelineConfig, run_id: str, cell: dict[str, Any]) -> None:
    """What a cell is, on its run: its name (mode, operator, seed) and as tags mode,
    modalities, operator, seed, labels used."""
    runs.client_for(cfg).update_run(run_id, name=cell["cell"])
    runs.set_tags(cfg, run_id, {
        "kind": "compare-cell", "mode": cell["mode"],
        "train_modalities": ",".join(cell["train_modalities"]),
        "test_modalities": ",".join(cell["test_modalities"]),
        "fusion": cell["fusion"] or "-", "seed": str(cell["seed"]),
        "labels_used": ",".join(cell["labels_used"])})


def _metric_name(row: dict[str, Any]) -> str:
    if row["mode"] == "multimodal":
        kind = f"multimodal.{row['fusion']}"
    elif row["mode"] == "cross_modal":
        kind = f"cross_modal.{row['train']}_to_{row['test']}"
    else:
        kind = f"unimodal.{row['train']}"
    return re.sub(r"[^\w.\-/ ]", "_", kind)


def finish_report(cfg: PipelineConfig, run_id: str, cells: list[dict[str, Any]],
                  reference_fusion: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Build the comparison's report from its cells (`mmcore.experiments.comparison`), with its terminal
    table under "table", and log it on the parent run."""
    from mmcore.experiments.comparison import render, report

    rep = {**report(cells, reference_fusion), **extra, "compare_run_id": run_id}
    rep["table"] = render(rep)
    log_report(cfg, run_id, rep, Path(cfg.run_dir) / "compare" / run_id)
    return rep


def log_report(cfg: PipelineConfig, run_id: str, report: dict[str, Any], out: Path) -> None:
    """report.json, the tables and the figures, on the comparison's parent run."""
    from mmcore.experiments.plots import plot_fusions, plot_robustness, plot_transfer_matrix

    out.mkdir(parents=True, exist_ok=True)
    client = runs.client_for(cfg)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    matrix = report["transfer_matrix"]
    table = pd.DataFrame(matrix["accuracy"], index=matrix["rows"], columns=matrix["columns"])
    client.log_table(run_id, table.rename_axis("trained on").reset_index(),
                     "transfer_matrix.json")
    summary = pd.DataFrame(report["summary"])
    client.log_table(run_id, summary, "summary.json")
    client.log_table(run_id, summary[summary["mode"] == "multimodal"], "fusion_operators.json")
    if report["robustness"]:
        client.log_table(run_id, pd.DataFrame(report["robustness"]), "robustness.json")
    figures = [plot_transfer_matrix(matrix, out / "transfer_matrix.png")]
    if (summary["mode"] == "multimodal").any():
        figures.append(plot_fusions(summary, out / "fusion_operators.png"))
    curves = pd.DataFrame(report["robustness_curves"])
    for modality in sorted(set(curves.get("modality", []))):
        figures.append(plot_robustness(curves, modality, out / f"robustness_{modality}.png"))
    runs.log_artifacts(cfg, run_id, [out / "report.json", *figures])
    metrics = {}
    for row in report["summary"]:
        metrics[f"{_metric_name(row)}.test_accuracy_mean"] = row["test_accuracy_mean"]
        metrics[f"{_metric_name(row)}.test_accuracy_std"] = row["test_accuracy_std"]
    for sig in report["significance"]:
        metrics[f"multimodal.{sig['fusion']}.difference_vs_best_unimodal"] = sig["difference_mean"]
        metrics[f"multimodal.{sig['fusion']}.mcnemar_p"] = sig["p_value"]
    runs.log_metrics(cfg, run_id, metrics)
