"""MLflow for a sweep: one parent run per `mmpipe sweep`, each cell a child (the cell's pipeline
run, its stages below it), and on the parent the results table (`log_table`, mean ± std over
seeds per grid point) with `results.csv` and the terminal table as artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmcore.config import PipelineConfig
from mmcore.experiments.grid import Grid, render, results_table
from tasks.tracking import runs


def start_sweep_run(cfg: PipelineConfig, flow_run_id: str | None, grid: Grid,
                    seeds: list[int], cells: int, where: str) -> str:
    """The sweep's parent run: the base config as params; the grid, seeds and where the cells
    ran as tags."""
    client = runs.client_for(cfg)
    seeds_said = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds"
    name = f"sweep · {cfg.name} · {' × '.join(grid)} · {seeds_said}"
    run = client.create_run(runs.experiment_id(client, cfg), run_name=name,
                            tags={"kind": "sweep", "prefect.flow_run_id": flow_run_id or "",
                                  "git.commit": runs.git_commit(),
                                  "config.digest": cfg.digest(),
                                  "sweep.grid": json.dumps(grid),
                                  "sweep.seeds": ",".join(map(str, seeds)),
                                  "sweep.cells": str(cells), "sweep.executor": where})
    runs.log_params_and_metrics(client, run.info.run_id, cfg.flat())
    return run.info.run_id


def tag_cell(cfg: PipelineConfig, run_id: str, point: dict[str, str], seed: int) -> None:
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
    text = render(cells, keys)
    runs.client_for(cfg).log_table(run_id, table, "results.json")
    table.to_csv(out / "results.csv", index=False)
    (out / "summary.txt").write_text(text + "\n")
    (out / "cells.json").write_text(json.dumps(cells, indent=1, default=str))
    runs.log_artifacts(cfg, run_id, [out / "results.csv", out / "summary.txt",
                                         out / "cells.json"])
    failed = sum("error" in c for c in cells)
    runs.set_tags(cfg, run_id, {"sweep.failed_cells": str(failed)})
    return text
