"""`mmpipe compare`: every cell (mode x train modality x test modality x fusion operator x seed)
through the cached pipeline, as ONE MLflow experiment: a compare parent run, each cell a child.

Cells of one seed share their upstream stages through the cache: unimodal A and cross-modal
A -> B share feature extraction and fusion (the space anchored on A), every fusion operator shares
the joint space. `run_cells` maps cells to results and takes the executor as an argument.

A comparison is a preset sweep: on the sweep's engine (`flows/sweep.py`), its cells run on a Dask
cluster when the flow runs with a DaskTaskRunner (`mmpipe compare` does, by default), else one
after another. On a cluster the spaces anchored on one modality still reuse the joint space's
labelled encoder: a seed's unimodal and cross-modal cells start only after its first
multimodal cell has finished (`after_joint_space`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.sweep import Executor, executor
from mmcore.config import FUSION_NAMES, load_config
from tasks.engine import recovery
from tasks.tracking import runs
from tasks.tracking.experiment_runs import finish_report, start_compare_run, tag_compare_cell

DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Cell:
    """One run of the comparison: a learning mode on one seed (and operator, if multimodal)."""

    mode: str
    modality: str  # unimodal: the modality; cross_modal: the training one; multimodal: unused
    fusion: str | None  # multimodal only
    seed: int

    @property
    def name(self) -> str:
        what = {"multimodal": f"multimodal-{self.fusion}", "unimodal": f"unimodal-{self.modality}",
                "cross_modal": f"cross_modal-{self.modality}"}[self.mode]
        return f"{what}-seed{self.seed}"

    def overrides(self) -> list[str]:
        extra = [f"training.fusion={self.fusion}"] if self.fusion else []
        return [f"seed={self.seed}", f"training.mode={self.mode}",
                f"training.modality={self.modality}", *extra]


def plan_cells(seeds: Iterable[int], fusions: Iterable[str],
               modalities: Iterable[str] = ("image", "text")) -> list[Cell]:
    """Every cell, seed by seed, so that a seed's cells reuse each other's cached stages; the
    multimodal ones first: the spaces anchored on one modality then take its labelled encoder
    from the joint space's feature extraction instead of training it again."""
    cells = []
    for seed in seeds:
        cells += [Cell("multimodal", "image", fusion, seed) for fusion in fusions]
        for modality in modalities:
            cells.append(Cell("unimodal", modality, None, seed))
            cells.append(Cell("cross_modal", modality, None, seed))
    return cells


def after_joint_space(cells: list[Cell]) -> Callable[[Cell], list[Cell]]:
    """For a cluster: the cells each cell waits for. A unimodal or cross-modal cell waits for the
    first multimodal cell of its seed, whose feature extraction trains the labelled encoders its
    anchored space takes (run together, both would train them). Multimodal cells wait for
    nobody: they share their stages through the cache locks."""
    first = {}
    for cell in cells:
        if cell.mode == "multimodal":
            first.setdefault(cell.seed, cell)
    return lambda cell: ([] if cell.mode == "multimodal" or cell.seed not in first
                         else [first[cell.seed]])


def run_cells(cells: list[Cell], run_cell: Callable[[Cell], dict[str, Any]],
              executor: Executor = map) -> list[dict[str, Any]]:
    """cells -> results, in the cells' order. `executor(fn, cells)` is `map` here; a pool's or
    a cluster's map runs them elsewhere."""
    return list(executor(run_cell, cells))


def parse_fusions(text: str | None, default: str) -> list[str]:
    """`all`, a comma-separated list of operators, or None (the config's operator)."""
    if not text:
        return [default]
    names = list(FUSION_NAMES) if text == "all" else [f.strip() for f in text.split(",")]
    unknown = [f for f in names if f not in FUSION_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown fusion operator(s) {unknown}; choose from "
                         f"{', '.join(FUSION_NAMES)} or 'all'")
    return names


def cell_runner(config: str | None, overrides: list[str], parent: str,
                ) -> Callable[[Cell], dict[str, Any]]:
    """The function that runs one cell (picklable, for a cluster's workers)."""
    return functools.partial(run_compare_cell, config, overrides, parent)


def run_compare_cell(config: str | None, overrides: list[str], parent: str,
                     cell: Cell) -> dict[str, Any]:
    """One cell: the pipeline flow, nested under the compare run, in the `comparison` role (its
    model is registered, tagged so, and never moves an alias)."""
    from flows.pipeline import pipeline

    summary = pipeline(config=config, overrides=[*overrides, *cell.overrides()],
                       role="comparison", parent_run_id=parent, run_name=cell.name)
    plan, metrics = summary["plan"], summary["metrics"]
    testing = Path(summary["stages"]["testing"]["path"])
    result = {
        "cell": cell.name, "mode": plan["mode"], "fusion": cell.fusion, "seed": cell.seed,
        "train_modalities": plan["train"], "test_modalities": plan["test"],
        "labels_used": plan["labels_used"], "test_accuracy": metrics["test.accuracy"],
        "macro_f1": metrics["test.macro_f1"], "run_id": summary["parent_run_id"],
        "predictions": str(testing / "predictions.parquet"),
        "robustness": str(testing / "robustness.parquet")
        if (testing / "robustness.parquet").exists() else None,
    }
    tag_compare_cell(load_config(config, overrides), summary["parent_run_id"], result)
    return result


@flow(name="mmpipe-compare", persist_result=False)  # no pickles: tasks/engine/results.py
def compare(config: str | None = None, overrides: list[str] | None = None,
            seeds: list[int] | None = None, fusions: str | None = "all",
            executor_name: str = "sequential (this process)") -> dict[str, Any]:
    """Unimodal, multimodal (each fusion operator) and cross-modal learning over seeds, as one
    MLflow experiment; returns the report (also `report.json` on the compare run). Cells run on
    the flow's Dask cluster if it has one (`flows.sweep.on_runner`; `executor_name` says where,
    for the record)."""
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)
    seeds = list(seeds if seeds is not None else DEFAULT_SEEDS)
    operators = parse_fusions(fusions, cfg.training.fusion)
    with recovery.recorded(cfg, flow_run.get_id(), get_run_logger()):  # first: after crashes
        parent = start_compare_run(cfg, flow_run.get_id(), seeds, operators)
        runs.set_tags(cfg, parent, {"compare.executor": executor_name})
        cells = plan_cells(seeds, operators)
        with runs.ended(cfg, parent):
            results = run_cells(cells, cell_runner(config, overrides, parent),
                                executor(after=after_joint_space(cells)))
            reference = cfg.training.fusion if cfg.training.fusion in operators else operators[0]
            rep = finish_report(cfg, parent, results, reference,
                                {"config": cfg.name, "seeds": seeds, "fusions": operators})
    return rep
