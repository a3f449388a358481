"""`mmpipe sweep`: a grid of config values times seeds, each cell a pipeline run over the shared
stage cache, on Dask through prefect-dask's DaskTaskRunner; and the engine `mmpipe compare`
shares.

Each cell is one Prefect task (`cell`) whose body runs the pipeline flow, nested, in the Dask
worker's process: its stages run there one after another, so tasks stay flat (a task that
submitted tasks could deadlock single-threaded workers; `tasks/parallel/dask_cluster.py`).
Cells that
share an upstream stage (same key) compute it once: the first takes the stage's lock, the others
wait for it and then read its output (`tasks/engine/locks.py`). A flow run without a DaskTaskRunner
(`--sequential`, or the flows called from Python as they are) runs its cells in its own process,
one after another.

In MLflow a sweep is one parent run, each cell a child (its pipeline run, with its stages below
it), and on the parent the results table (`tasks/tracking/experiment_runs.py`).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, TypeVar

from prefect import Flow, flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner
from prefect.utilities.urls import url_for

from mmcore.config import load_config
from mmcore.experiments.grid import Grid, SweepCell, plan_sweep
from mmcore.uris import public_uri
from tasks.engine import recovery
from tasks.engine.results import SERIALIZER as JSON_RESULTS
from tasks.tracking import runs
from tasks.tracking.experiment_runs import (
    artifact_key,
    log_results,
    start_sweep_run,
    sweep_markdown,
    sweep_name,
    tag_sweep_cell,
)

C = TypeVar("C", bound=Hashable)
RunCell = Callable[[Any], dict[str, Any]]
Executor = Callable[[RunCell, list[Any]], Iterator[dict[str, Any]] | list[dict[str, Any]]]


# ---- the engine: where cells run ------------------------------------------------------------

def task_runner(address: str | None = None, workers: int | None = None,
                sequential: bool = False) -> TaskRunner | None:
    """The task runner for a sweep's flow: None (the flow's own, cells in its process) when
    `sequential`, else a DaskTaskRunner on the cluster at `address` or on a new LocalCluster of
    `workers` processes (default: one per core)."""
    if sequential:
        return None
    from tasks.parallel.dask_cluster import dask_task_runner  # Dask only when cells run on it

    return dask_task_runner(address, workers)


def on_runner(flow_obj: Flow, address: str | None = None, workers: int | None = None,
              sequential: bool = False) -> Flow:
    """`flow_obj` with its cells on Dask (see `task_runner`), or as it is when sequential.
    Dask's scheduler and nannies log every start and stop at INFO (some 40 lines a sweep);
    their warnings and errors still show."""
    runner = task_runner(address, workers, sequential)
    if runner is None:
        return flow_obj
    logging.getLogger("distributed").setLevel(logging.WARNING)
    return flow_obj.with_options(task_runner=runner)


def where(address: str | None, workers: int | None, sequential: bool) -> str:
    """Where the cells run, in words (a tag on the sweep's run, a line on the terminal)."""
    if sequential:
        return "sequential (this process)"
    if address:
        return f"Dask cluster at {public_uri(address)}"
    from tasks.parallel.dask_cluster import local_workers

    return f"Dask LocalCluster, {workers or local_workers()} worker processes"


@task(name="cell", cache_policy=NO_CACHE, persist_result=False)
def cell_task(run_cell: RunCell, cell: Any) -> dict[str, Any]:
    """One cell, on a Dask worker: the pipeline flow, nested, in this process."""
    return run_cell(cell)


def on_cluster(run_cell: RunCell, cells: Sequence[C],
               after: Callable[[C], list[C]] | None = None) -> list[dict[str, Any]]:
    """Every cell as a `cell` task of this flow's task runner; a cell starts only when the
    cells `after(cell)` finished (Dask holds it back; no worker waits). Results in cells' order.
    """
    futures: dict[C, Any] = {}
    for cell in cells:
        waits = [futures[c] for c in (after(cell) if after else [])]
        name = str(getattr(cell, "label", getattr(cell, "name", cell)))
        futures[cell] = cell_task.with_options(task_run_name=name).submit(run_cell, cell,
                                                                          wait_for=waits)
    return [futures[cell].result() for cell in cells]


def _on_dask(runner: TaskRunner) -> bool:
    """Whether the runner is prefect-dask's, without importing Dask where it is not loaded
    (`mmpipe serve` and a sequential compare load this module and need none of it)."""
    module = sys.modules.get("prefect_dask")
    return module is not None and isinstance(runner, module.DaskTaskRunner)


def executor(after: Callable[[Any], list[Any]] | None = None) -> Executor:
    """How this flow run runs cells: on its DaskTaskRunner's cluster, or here, one by one."""
    context = FlowRunContext.get()
    if context is not None and _on_dask(context.task_runner):
        return functools.partial(on_cluster, after=after)
    return map


def registration(register: bool) -> list[str]:
    """The overrides of a cell's config: comparison and sweep cells log their models with their
    runs and register none, unless asked (`--register`)."""
    return [] if register else ["training.register_model=false"]


# ---- the sweep ------------------------------------------------------------------------------

def run_sweep_cell(config: str | None, overrides: list[str], parent: str, register: bool,
                   cell: SweepCell) -> dict[str, Any]:
    """One cell: the pipeline in the `sweep` role, nested under the sweep's run; its model
    logged with its run and registered only when `register` (never moving an alias). A cell
    that fails is a result with `error` (the sweep goes on; its own pipeline run is marked
    failed in Prefect and MLflow)."""
    from flows.pipeline import pipeline

    result: dict[str, Any] = {"cell": cell.name, "point": dict(cell.point), "seed": cell.seed}
    cell_overrides = [*overrides, *cell.overrides(), *registration(register)]
    try:
        summary = pipeline(config=config, overrides=cell_overrides, role="sweep",
                           parent_run_id=parent, run_name=cell.name)
    except Exception as exc:  # one cell's failure is reported, not fatal
        return {**result, "error": f"{type(exc).__name__}: {exc}"}
    tag_sweep_cell(load_config(config, cell_overrides), summary["parent_run_id"], result["point"],
                   cell.seed)
    return {**result, "run_id": summary["parent_run_id"], "metrics": summary["metrics"],
            "stages": {stage: {"key": info["key"], "state": info["state"]}
                       for stage, info in summary["stages"].items()}}


def _sweep_run_name() -> str:
    """Flow runs named by what they run (`sweep · default · training.fusion · 2 seeds`), not
    Prefect's random names."""
    params = flow_run.parameters
    config, overrides = params.get("config"), params.get("overrides")
    grid, seeds, _ = plan_sweep(config, list(overrides or []), params.get("grid"),
                                params.get("seeds"))
    return sweep_name(load_config(config, overrides).name, grid, seeds)


@flow(name="mmpipe-sweep", flow_run_name=_sweep_run_name,
      persist_result=False,  # no pickles: tasks/engine/results.py
      result_serializer=JSON_RESULTS)  # a failed run's exception: JSON too
def sweep(config: str | None = None, overrides: list[str] | None = None,
          grid: Grid | None = None, seeds: list[int] | None = None,
          executor_name: str = "sequential (this process)",
          register_models: bool = False) -> dict[str, Any]:
    """Every cell of grid x seeds through the cached pipeline, nested under one MLflow run with
    the results table; returns the cells, the table and the sweep's run id and UI URL. Run it
    through `on_runner` for Dask (`executor_name` only says where, for the record). Cells'
    models are logged with their runs, and registered only with `register_models`."""
    from flows.pipeline import tag_flow_run

    overrides = list(overrides or [])
    cfg = load_config(config, [*overrides, *registration(register_models)])  # as each cell
    grid, seeds, cells = plan_sweep(config, overrides, grid, seeds)
    with recovery.recorded(cfg, flow_run.get_id(), get_run_logger()):  # first: after crashes
        tag_flow_run(["mmpipe", cfg.name, "sweep", *grid, *(f"seed:{s}" for s in seeds)])
        flow_run_url = url_for("flow-run", obj_id=flow_run.get_id())
        parent = start_sweep_run(cfg, flow_run.get_id(), grid, seeds, len(cells), executor_name,
                                 flow_run_url)
        get_run_logger().info("sweep: %d cells (%d grid points x %d seeds) on %s", len(cells),
                              len(cells) // len(seeds), len(seeds), executor_name)
        with runs.ended(cfg, parent):
            results = list(executor()(functools.partial(run_sweep_cell, config, overrides, parent,
                                                        register_models), cells))
            logged = log_results(cfg, parent, results, grid, seeds, executor_name, flow_run_url)
        create_markdown_artifact(sweep_markdown(sweep_name(cfg.name, grid, seeds), logged),
                                 key=artifact_key("sweep", cfg.name),
                                 description=f"{cfg.name}: the sweep's results and its MLflow "
                                             "run")
    return {"config": cfg.name, "sweep_run_id": parent, "run_url": logged["run_url"],
            "grid": grid, "seeds": seeds, "executor": executor_name, "cells": results,
            "table": logged["table"], "failed": [c["cell"] for c in results if "error" in c]}


def run_sweep(config: str | None = None, overrides: list[str] | None = None,
              grid: Grid | None = None, seeds: list[int] | None = None,
              address: str | None = None, workers: int | None = None,
              sequential: bool = False, register: bool = False) -> dict[str, Any]:
    """The sweep on a LocalCluster (default), the cluster at `address`, or sequentially."""
    return on_runner(sweep, address, workers, sequential)(
        config=config, overrides=overrides, grid=grid, seeds=seeds,
        executor_name=where(address, workers, sequential), register_models=register)
