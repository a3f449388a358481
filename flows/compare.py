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
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.utilities.urls import url_for

from flows.sweep import Executor, executor, registration
from mmcore.config import FUSION_NAMES, TrainingConfig, load_config
from mmcore.learning_plan import planned_label
from tasks.engine import recovery
from tasks.engine.results import SERIALIZER as JSON_RESULTS
from tasks.tracking import runs
from tasks.tracking.experiment_runs import (
    artifact_key,
    compare_markdown,
    compare_name,
    finish_report,
    start_compare_run,
    tag_compare_cell,
)

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

    @property
    def label(self) -> str:
        """`multimodal late · image+text · seed 0`: its MLflow run's and Prefect flow run's
        name (`mmcore.learning_plan.mode_label`, on image + text data)."""
        cfg = TrainingConfig(mode=self.mode, modality=self.modality,
                             **({"fusion": self.fusion} if self.fusion else {}))
        return f"{planned_label(cfg)} · seed {self.seed}"

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


def cell_runner(config: str | None, overrides: list[str], parent: str, register: bool = False,
                ) -> Callable[[Cell], dict[str, Any]]:
    """The function that runs one cell (picklable, for a cluster's workers)."""
    return functools.partial(run_compare_cell, config, overrides, parent, register)


def run_compare_cell(config: str | None, overrides: list[str], parent: str, register: bool,
                     cell: Cell) -> dict[str, Any]:
    """One cell: the pipeline flow, nested under the compare run, in the `comparison` role. Its
    model is logged with its run; registered only when `register` (tagged so, and never moving
    an alias)."""
    from flows.pipeline import pipeline

    cell_overrides = [*overrides, *cell.overrides(), *registration(register)]
    summary = pipeline(config=config, overrides=cell_overrides, role="comparison",
                       parent_run_id=parent, run_name=cell.label)
    plan, metrics = summary["plan"], summary["metrics"]
    testing = Path(summary["stages"]["testing"]["path"])
    result = {
        "cell": cell.name, "label": cell.label, "mode": plan["mode"], "fusion": cell.fusion,
        "seed": cell.seed, "train_modalities": plan["train"], "test_modalities": plan["test"],
        "labels_used": plan["labels_used"], "test_accuracy": metrics["test.accuracy"],
        "macro_f1": metrics["test.macro_f1"], "run_id": summary["parent_run_id"],
        "predictions": str(testing / "predictions.parquet"),
        "robustness": str(testing / "robustness.parquet")
        if (testing / "robustness.parquet").exists() else None,
    }
    tag_compare_cell(load_config(config, overrides), summary["parent_run_id"], result)
    return result


def _compare_run_name() -> str:
    """Flow runs named by what they run (`compare · default · 2 seeds · 3 operators`), not
    Prefect's random names."""
    params = flow_run.parameters
    cfg = load_config(params.get("config"), params.get("overrides"))
    seeds = list(params.get("seeds") if params.get("seeds") is not None else DEFAULT_SEEDS)
    return compare_name(cfg.name, seeds,
                        parse_fusions(params.get("fusions", "all"), cfg.training.fusion))


@flow(name="mmpipe-compare", flow_run_name=_compare_run_name,
      persist_result=False,  # no pickles: tasks/engine/results.py
      result_serializer=JSON_RESULTS)  # a failed run's exception: JSON too
def compare(config: str | None = None, overrides: list[str] | None = None,
            seeds: list[int] | None = None, fusions: str | None = "all",
            executor_name: str = "sequential (this process)",
            register_models: bool = False) -> dict[str, Any]:
    """Unimodal, multimodal (each fusion operator) and cross-modal learning over seeds, as one
    MLflow experiment; returns the report (also `report.json` on the compare run). Cells run on
    the flow's Dask cluster if it has one (`flows.sweep.on_runner`; `executor_name` says where,
    for the record). Their models are logged with their runs, and registered only with
    `register_models`."""
    from flows.pipeline import tag_flow_run

    overrides = list(overrides or [])
    cfg = load_config(config, [*overrides, *registration(register_models)])  # as each cell
    seeds = list(seeds if seeds is not None else DEFAULT_SEEDS)
    operators = parse_fusions(fusions, cfg.training.fusion)
    with recovery.recorded(cfg, flow_run.get_id(), get_run_logger()):  # first: after crashes
        tag_flow_run(["mmpipe", cfg.name, "compare", *(f"fusion:{f}" for f in operators),
                      *(f"seed:{s}" for s in seeds)])
        cells = plan_cells(seeds, operators)
        flow_run_url = url_for("flow-run", obj_id=flow_run.get_id())
        parent = start_compare_run(cfg, flow_run.get_id(), seeds, operators, len(cells),
                                   executor_name, flow_run_url)
        with runs.ended(cfg, parent):
            results = run_cells(cells, cell_runner(config, overrides, parent, register_models),
                                executor(after=after_joint_space(cells)))
            reference = cfg.training.fusion if cfg.training.fusion in operators else operators[0]
            rep = finish_report(cfg, parent, results, reference,
                                {"config": cfg.name, "seeds": seeds, "fusions": operators,
                                 "executor": executor_name}, flow_run_url)
        create_markdown_artifact(compare_markdown(rep),
                                 key=artifact_key("compare", cfg.name),
                                 description=f"{cfg.name}: the comparison's headline and its "
                                             "MLflow run")
    return rep
