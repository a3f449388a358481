"""MLflow for experiments over many pipeline runs: one parent run per `mmpipe compare` or
`mmpipe sweep`, each cell a child run (the cell's pipeline run, its stages below it).

- A comparison of learning modes gets on its parent the transfer matrix (`log_table` + heatmap),
  the fusion operators side by side, the robustness plots and `report.json`.
- A sweep gets the results table (`log_table`, mean ± std over seeds per grid point) with
  `results.csv` and the terminal table as artifacts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mmcore.config import PipelineConfig
from mmcore.experiments.grid import Grid, results_table
from mmcore.experiments.grid import render as render_grid
from tasks.tracking import runs


def _seeds_said(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"


def start_compare_run(cfg: PipelineConfig, flow_run_id: str | None, seeds: list[int],
                      fusions: list[str]) -> str:
    """The comparison's parent run: the base config as params; seeds and operators as tags."""
    fusions_said = fusions[0] if len(fusions) == 1 else f"{len(fusions)} fusion operators"
    return runs.start_parent_run(
        cfg, flow_run_id, f"compare · {cfg.name} · {_seeds_said(seeds)} · {fusions_said}",
        {"kind": "compare", "compare.seeds": ",".join(map(str, seeds)),
         "compare.fusions": ",".join(fusions)})


def start_sweep_run(cfg: PipelineConfig, flow_run_id: str | None, grid: Grid,
                    seeds: list[int], cells: int, where: str) -> str:
    """The sweep's parent run: the base config as params; the grid, seeds and where the cells
    ran as tags."""
    return runs.start_parent_run(
        cfg, flow_run_id, f"sweep · {cfg.name} · {' × '.join(grid)} · {_seeds_said(seeds)}",
        {"kind": "sweep", "sweep.grid": json.dumps(grid), "sweep.seeds": ",".join(map(str, seeds)),
         "sweep.cells": str(cells), "sweep.executor": where})


def tag_compare_cell(cfg: PipelineConfig, run_id: str, cell: dict[str, Any]) -> None:
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
    """Build the comparison's report from its cells (`mmcore.experiments.comparison`), with its
    terminal
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


def tag_sweep_cell(cfg: PipelineConfig, run_id: str, point: dict[str, str], seed: int) -> None:
    """What a cell is, on its run: `kind=sweep-cell`, the grid values as `sweep.<key>`, seed."""
    runs.set_tags(cfg, run_id, {"kind": "sweep-cell", "seed": str(seed),
                                    **{f"sweep.{k}": v for k, v in point.items()}})


def log_results(cfg: PipelineConfig, run_id: str, cells: list[dict[str, Any]],
                keys: list[str]) -> str:
    """The results table on the parent run (`results.json` as an MLflow table, `results.csv`,
    `summary.txt`); returns the terminal table."""
    out = Path(cfg.run_dir) / "sweeps" / run_id
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(cells)
    text = render_grid(cells, keys)
    runs.client_for(cfg).log_table(run_id, table, "results.json")
    table.to_csv(out / "results.csv", index=False)
    (out / "summary.txt").write_text(text + "\n")
    (out / "cells.json").write_text(json.dumps(cells, indent=1, default=str))
    runs.log_artifacts(cfg, run_id, [out / "results.csv", out / "summary.txt",
                                         out / "cells.json"])
    failed = sum("error" in c for c in cells)
    runs.set_tags(cfg, run_id, {"sweep.failed_cells": str(failed)})
    return text
