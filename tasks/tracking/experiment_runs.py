"""MLflow for experiments over many pipeline runs: one parent run per `mmpipe compare` or
`mmpipe sweep`, each cell a child run (the cell's pipeline run, its stages below it).

Each parent explains itself: a Markdown description (what ran, the Prefect flow run, the
headline table, links to every table and plot), params that hold only what all its cells share
(what varies is each cell's tags and params), and metrics rounded to what they can tell.

- A comparison of learning modes gets on its parent the transfer matrix (`log_table` + heatmap),
  the fusion operators side by side, McNemar's tests, the robustness tables and plots and
  `report.json`.
- A sweep gets the results table (`log_table`, mean ± std over seeds per grid point) with
  `results.csv` and the terminal table as artifacts.

The same headline, with the MLflow link, is the Prefect flow run's Markdown artifact
(`compare_markdown`, `sweep_markdown`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from mmcore.config import PipelineConfig
from mmcore.experiments.comparison import CELL_GAP, markdown_table
from mmcore.experiments.grid import SHOWN, Grid, results_table
from mmcore.experiments.grid import render as render_grid
from tasks.tracking import runs
from tasks.tracking.run_summary import artifact_link, experiment_link, mlflow_ui, run_link

# What a comparison's cells differ in: their params, not the comparison's.
COMPARE_VARIES = ("seed", "training.mode", "training.modality", "training.fusion")
DIGITS = 4  # metrics and table values shown: accuracies to 0.0001, p-values to 4 significant


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """A number as shown: `digits` decimals (p-values and other small numbers: `digits`
    significant digits), exact zero as 0 (never -0.0 or -2.2e-16); anything else as it is."""
    if not isinstance(value, float) or not math.isfinite(value):  # counts stay whole
        return value
    if value == 0 or abs(value) < 10 ** -(digits + 8):
        return 0.0
    if abs(value) < 10 ** -(digits - 1):
        return float(f"{value:.{digits}g}")
    return round(value, digits) + 0.0


def rounded_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.map(rounded) if not frame.empty else frame


def _seeds_said(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"


def compare_name(config_name: str, seeds: list[int], fusions: list[str]) -> str:
    """`compare · default · 2 seeds · 3 operators`: the parent run's and the flow run's name."""
    fusions_said = fusions[0] if len(fusions) == 1 else f"{len(fusions)} operators"
    return f"compare · {config_name} · {_seeds_said(seeds)} · {fusions_said}"


def sweep_name(config_name: str, grid: Grid, seeds: list[int]) -> str:
    """`sweep · default · training.fusion × shared_space.loss · 2 seeds`."""
    return f"sweep · {config_name} · {' × '.join(grid) or 'base'} · {_seeds_said(seeds)}"


def shared_params(cfg: PipelineConfig, varies: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The resolved config without the keys the cells vary: what every cell shares."""
    return {k: v for k, v in cfg.flat().items() if k not in varies}


def start_compare_run(cfg: PipelineConfig, flow_run_id: str | None, seeds: list[int],
                      fusions: list[str], cells: int, executor: str,
                      flow_run_url: str | None = None) -> str:
    """The comparison's parent run: as params the settings every cell shares; seeds, operators
    and where the cells run as tags; a first description (what runs, the Prefect link)."""
    run_id = runs.start_parent_run(
        cfg, flow_run_id, compare_name(cfg.name, seeds, fusions),
        {"kind": "compare", "compare.seeds": ",".join(map(str, seeds)),
         "compare.fusions": ",".join(fusions), "compare.cells": str(cells),
         "compare.executor": executor, "compare.varies": ",".join(COMPARE_VARIES)},
        params=shared_params(cfg, COMPARE_VARIES))
    runs.set_tags(cfg, run_id, {MLFLOW_RUN_NOTE: "\n".join(
        _compare_intro(cfg.name, seeds, fusions, cells, executor, flow_run_url)
        + ["", "Running…"])})
    return run_id


def _compare_intro(name: str, seeds: list[int], fusions: list[str], cells: int, executor: str,
                   flow_run_url: str | None) -> list[str]:
    lines = [f"**compare · {name}**: unimodal, cross-modal and multimodal learning, the "
             f"multimodal with {len(fusions)} fusion operator{'s' * (len(fusions) > 1)} "
             f"({', '.join(fusions)}), on seed{'s' * (len(seeds) > 1)} "
             f"{', '.join(map(str, seeds))}: {cells} cells, each a child run below (tags "
             f"`mode`, `fusion`, `seed`), on {executor}.",
             "", "Params: only the settings every cell shares; what the cells vary "
             f"({', '.join(f'`{k}`' for k in COMPARE_VARIES)}) is each cell's tags and params."]
    if flow_run_url:
        lines += ["", f"Prefect flow run: [{flow_run_url}]({flow_run_url})"]
    return lines


def start_sweep_run(cfg: PipelineConfig, flow_run_id: str | None, grid: Grid,
                    seeds: list[int], cells: int, where: str,
                    flow_run_url: str | None = None) -> str:
    """The sweep's parent run: as params the settings every cell shares (not the grid's keys nor
    the seed); the grid, seeds and where the cells ran as tags; a first description."""
    run_id = runs.start_parent_run(
        cfg, flow_run_id, sweep_name(cfg.name, grid, seeds),
        {"kind": "sweep", "sweep.grid": json.dumps(grid), "sweep.seeds": ",".join(map(str, seeds)),
         "sweep.cells": str(cells), "sweep.executor": where},
        params=shared_params(cfg, ["seed", *grid]))
    runs.set_tags(cfg, run_id, {MLFLOW_RUN_NOTE: "\n".join(
        _sweep_intro(cfg, grid, seeds, cells, where, flow_run_url) + ["", "Running…"])})
    return run_id


def start_tune_run(cfg: PipelineConfig, flow_run_id: str | None, study: str,
                   space: dict[str, str], trials: int, storage: str, where: str) -> str:
    """A `mmpipe tune` parent run: as params the settings every trial shares; the study, its
    storage, the search space and where trials run as tags. Each trial is a child run."""
    from mmcore.uris import public_uri

    return runs.start_parent_run(
        cfg, flow_run_id, f"tune · {cfg.name} · {study}",
        {"kind": "tune", "tune.study": study, "tune.storage": public_uri(storage),
         "tune.space": json.dumps(space), "tune.trials": str(trials), "tune.executor": where},
        params=shared_params(cfg, list(space)))


def log_tune_results(cfg: PipelineConfig, run_id: str, trials: pd.DataFrame,
                     best: dict[str, Any], files: list[Path]) -> str:
    """The trials table, the best trial's value and number, and the files (best config,
    parameter importances) on the tune run; returns its UI URL."""
    client = runs.client_for(cfg)
    client.log_table(run_id, rounded_frame(trials), "trials.json")
    runs.log_metrics(cfg, run_id, {"best_value": best["value"], "best_trial": best["number"],
                                   "trials_complete": int((trials["state"] == "COMPLETE").sum()),
                                   "trials_pruned": int((trials["state"] == "PRUNED").sum())})
    runs.log_artifacts(cfg, run_id, files)
    experiment = client.get_run(run_id).info.experiment_id
    return f"{mlflow_ui(cfg)}/{run_link(experiment, run_id)}"


def _sweep_intro(cfg: PipelineConfig, grid: Grid, seeds: list[int], cells: int, where: str,
                 flow_run_url: str | None) -> list[str]:
    varied = "; ".join(f"`{k}` = {', '.join(v)}" for k, v in grid.items()) or "nothing"
    lines = [f"**sweep · {cfg.name}**: {varied}, on seeds {', '.join(map(str, seeds))}: "
             f"{cells} cells, each a child run below (tags `sweep.<key>`, `seed`), on {where}.",
             "", "Params: only the settings every cell shares; each cell's grid values and seed "
             "are its tags and params."]
    if flow_run_url:
        lines += ["", f"Prefect flow run: [{flow_run_url}]({flow_run_url})"]
    return lines


def tag_compare_cell(cfg: PipelineConfig, run_id: str, cell: dict[str, Any]) -> None:
    """What a cell is, on its run: its name (mode, operator, seed) and as tags mode,
    modalities, operator, seed, labels used."""
    runs.client_for(cfg).update_run(run_id, name=cell["label"])
    runs.set_tags(cfg, run_id, {
        "kind": "compare-cell", "mode": cell["mode"],
        "train_modalities": "+".join(cell["train_modalities"]),
        "test_modalities": "+".join(cell["test_modalities"]),
        "fusion": cell["fusion"] or "none", "seed": str(cell["seed"]),
        "labels_used": "+".join(cell["labels_used"])})


def _metric_name(row: dict[str, Any]) -> str:
    if row["mode"] == "multimodal":
        kind = f"multimodal.{row['fusion']}"
    elif row["mode"] == "cross_modal":
        kind = f"cross_modal.{row['train']}_to_{row['test']}"
    else:
        kind = f"unimodal.{row['train']}"
    return re.sub(r"[^\w.\-/ ]", "_", kind)


# Tables and plots on a comparison's parent: (artifact path, what it is), in the description's
# order. Robustness plots are added per corrupted modality.
COMPARE_TABLES = [
    ("summary.json", "test accuracy and macro F1 per model"),
    ("significance.json", "fused − best unimodal, McNemar's test"),
    ("fusion_operators.json", "fusion operators"),
    ("transfer_matrix.json", "transfer matrix"),
    ("robustness.json", "robustness figures"),
    ("fully_corrupted.json", "one modality fully corrupted vs the intact unimodal model"),
    ("graceful.json", "each fused model's worst gap to the best single modality over the "
                      "corruption levels"),
    ("report.json", "everything (report.json)"),
]


def finish_report(cfg: PipelineConfig, run_id: str, cells: list[dict[str, Any]],
                  reference_fusion: str, extra: dict[str, Any],
                  flow_run_url: str | None = None) -> dict[str, Any]:
    """Build the comparison's report from its cells (`mmcore.experiments.comparison`), with its
    terminal table under "table" and the parent run's UI URL under "run_url", log it on the
    parent run and describe the run."""
    from mmcore.experiments.comparison import render, report

    rep = {**report(cells, reference_fusion), **extra, "compare_run_id": run_id}
    rep["table"] = render(rep)
    artifacts = log_report(cfg, run_id, rep, Path(cfg.run_dir) / "compare" / run_id)
    experiment = runs.client_for(cfg).get_run(run_id).info.experiment_id
    rep["run_url"] = f"{mlflow_ui(cfg)}/{run_link(experiment, run_id)}"
    note = _compare_intro(cfg.name, rep["seeds"], rep["fusions"], len(cells),
                          extra.get("executor", "?"), flow_run_url)
    runs.set_tags(cfg, run_id, {MLFLOW_RUN_NOTE: "\n".join(
        [*note, "", *_compare_body(rep, experiment, run_id, artifacts)])})
    return rep


def _compare_body(rep: dict[str, Any], experiment: str, run_id: str,
                  artifacts: list[str]) -> list[str]:
    """The description below its first lines: the headline, then links to every table and
    plot, and what the robustness columns mean."""
    from mmcore.experiments.comparison import CELL_GAP, ROBUSTNESS_COLUMNS, headline_markdown

    def link(path: str, text: str) -> str:
        return f"[{text}]({artifact_link(experiment, run_id, path)})"

    tables = [link(p, t) for p, t in COMPARE_TABLES if p in artifacts]
    plots = [link(p, p.removesuffix(".png").replace("_", " ")) for p in artifacts
             if p.endswith(".png")]
    return [headline_markdown(rep, CELL_GAP), "", "#### **Tables, plots, cells**", "",
            "**Tables**: " + " · ".join(tables), "", "**Plots**: " + " · ".join(plots), "",
            f"Cells: [the runs table]({experiment_link(experiment)}) (test accuracy, mode, "
            "fusion and seed as columns; this run's \"+\" shows its cells).", "",
            "**Robustness columns**: " + "; ".join(f"`{k}`: {v}"
                                                   for k, v in ROBUSTNESS_COLUMNS.items()) + "."]


def log_report(cfg: PipelineConfig, run_id: str, report: dict[str, Any], out: Path,
               ) -> list[str]:
    """report.json, the tables (rounded) and the figures on the comparison's parent run, and its
    metrics (rounded); returns the artifacts' paths."""
    from mmcore.experiments.plots import (
        plot_comparison_robustness,
        plot_fusions,
        plot_transfer_matrix,
    )

    out.mkdir(parents=True, exist_ok=True)
    client = runs.client_for(cfg)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    matrix = report["transfer_matrix"]
    summary = pd.DataFrame(report["summary"])
    tables = {
        "summary.json": summary,
        "significance.json": pd.DataFrame(report["significance"]).drop(
            columns=["seeds"], errors="ignore"),
        "fusion_operators.json": summary[summary["mode"] == "multimodal"],
        "transfer_matrix.json": pd.DataFrame(matrix["accuracy"], index=matrix["rows"],
                                             columns=matrix["columns"])
        .rename_axis("trained on").reset_index(),
        "robustness.json": pd.DataFrame(report["robustness"]),
        "fully_corrupted.json": pd.DataFrame(report["fully_corrupted"]),
        "graceful.json": pd.DataFrame(report["graceful"]),
    }
    for name, table in tables.items():
        if not table.empty:
            client.log_table(run_id, rounded_frame(table), name)
    figures = [plot_transfer_matrix(matrix, out / "transfer_matrix.png")]
    if (summary["mode"] == "multimodal").any():
        figures.append(plot_fusions(summary, out / "fusion_operators.png"))
    curves = pd.DataFrame(report["robustness_curves"])
    for modality in sorted(set(curves.get("modality", []))):
        figures.append(plot_comparison_robustness(
            curves, modality, out / f"robustness_{modality}.png",
            pd.DataFrame(report["best_unimodal_curves"])))
    runs.log_artifacts(cfg, run_id, [out / "report.json", *figures])
    runs.log_metrics(cfg, run_id, _compare_metrics(report))
    return [*(n for n, t in tables.items() if not t.empty), "report.json",
            *(f.name for f in figures)]


def _compare_metrics(report: dict[str, Any]) -> dict[str, float]:
    """Per kind of model its mean and std test accuracy, per fused model its difference to the
    best unimodal and McNemar's p; rounded as shown."""
    metrics = {}
    for row in report["summary"]:
        metrics[f"{_metric_name(row)}.test_accuracy_mean"] = row["test_accuracy_mean"]
        metrics[f"{_metric_name(row)}.test_accuracy_std"] = row["test_accuracy_std"]
    for sig in report["significance"]:
        metrics[f"multimodal.{sig['fusion']}.difference_vs_best_unimodal"] = sig["difference_mean"]
        metrics[f"multimodal.{sig['fusion']}.mcnemar_p"] = sig["p_value"]
    return {k: rounded(v) for k, v in metrics.items()}


def compare_markdown(rep: dict[str, Any]) -> str:
    """The Prefect flow run's artifact: the headline and the way to the MLflow run."""
    from mmcore.experiments.comparison import headline_markdown

    return "\n".join([f"# {compare_name(rep['config'], rep['seeds'], rep['fusions'])}", "",
                      f"MLflow run: [{rep['run_url']}]({rep['run_url']})", "",
                      headline_markdown(rep)])


def tag_sweep_cell(cfg: PipelineConfig, run_id: str, point: dict[str, str], seed: int) -> None:
    """What a cell is, on its run: `kind=sweep-cell`, the grid values as `sweep.<key>`, seed."""
    runs.set_tags(cfg, run_id, {"kind": "sweep-cell", "seed": str(seed),
                                **{f"sweep.{k}": v for k, v in point.items()}})


SWEEP_FILES = [("results.json", "results table"), ("results.csv", "as CSV"),
               ("summary.txt", "the terminal table"), ("cells.json", "every cell")]


def log_results(cfg: PipelineConfig, run_id: str, cells: list[dict[str, Any]], grid: Grid,
                seeds: list[int], where: str, flow_run_url: str | None = None,
                ) -> dict[str, str]:
    """The results table on the parent run (`results.json` as an MLflow table, rounded;
    `results.csv`, `summary.txt`, `cells.json`), its description, and `failed_cells`; returns
    the terminal table (`table`), the headline in Markdown for Prefect (`headline`) and the
    run's UI URL (`run_url`)."""
    out = Path(cfg.run_dir) / "sweeps" / run_id
    out.mkdir(parents=True, exist_ok=True)
    table = results_table(cells)
    text = render_grid(cells, list(grid))
    client = runs.client_for(cfg)
    client.log_table(run_id, rounded_frame(table), "results.json")
    table.to_csv(out / "results.csv", index=False)
    (out / "summary.txt").write_text(text + "\n")
    (out / "cells.json").write_text(json.dumps(cells, indent=1, default=str))
    runs.log_artifacts(cfg, run_id, [out / "results.csv", out / "summary.txt",
                                     out / "cells.json"])
    failed = sum("error" in c for c in cells)
    experiment = client.get_run(run_id).info.experiment_id
    links = " · ".join(f"[{text}]({artifact_link(experiment, run_id, path)})"
                       for path, text in SWEEP_FILES)
    note = [*_sweep_intro(cfg, grid, seeds, len(cells), where, flow_run_url), "",
            sweep_headline(table, list(grid), failed, CELL_GAP), "",
            "#### **Tables, cells**", "", f"**Tables**: {links}", "",
            f"Cells: [the runs table]({experiment_link(experiment)}) (this run's \"+\" shows "
            "its cells)."]
    runs.set_tags(cfg, run_id, {"sweep.failed_cells": str(failed),
                                MLFLOW_RUN_NOTE: "\n".join(note)})
    return {"table": text, "headline": sweep_headline(table, list(grid), failed),
            "run_url": f"{mlflow_ui(cfg)}/{run_link(experiment, run_id)}"}


def sweep_headline(table: pd.DataFrame, keys: list[str], failed: int, gap: str = "") -> str:
    """Per grid point: the seeds that finished and test accuracy and macro F1 as mean ± std
    (3 digits), as a Markdown table (`gap`: `comparison.markdown_table`)."""
    header = [*keys, "seeds", *(m.removeprefix("test.") for m in SHOWN)]
    rows = []
    for _, row in table.iterrows():
        shown = [f"{row[f'{m}.mean']:.3f} ± {row[f'{m}.std']:.3f}"
                 if f"{m}.mean" in row and pd.notna(row[f"{m}.mean"]) else "-" for m in SHOWN]
        rows.append([*(str(row[k]) for k in keys), str(row["seeds"]) or "-", *shown])
    lines = ["#### **Results** (mean ± std over seeds)", "", *markdown_table(header, rows, gap)]
    if failed:
        lines += ["", f"{failed} cell{'s' * (failed > 1)} failed: see `cells.json`."]
    return "\n".join(lines)


def sweep_markdown(name: str, result: dict[str, str]) -> str:
    """The Prefect flow run's artifact: the headline and the way to the MLflow run."""
    return "\n".join([f"# {name}", "", f"MLflow run: [{result['run_url']}]({result['run_url']})",
                      "", result["headline"]])


def artifact_key(kind: str, config_name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return f"mmpipe-{kind}-" + (re.sub(r"[^a-z0-9-]+", "-", config_name.lower()).strip("-")
                                or "run")
