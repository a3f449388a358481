"""`mmpipe sweep`: grids and seeds into cells, the results table, and the same answers from a
sweep on a 2-worker Dask LocalCluster as from the same sweep run sequentially (real Prefect
flows, real MLflow SQLite store read back, real Parquet outputs compared by digest)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from mmcore.config import ConfigError, load_config
from mmcore.experiments.grid import (
    parse_grid,
    plan,
    plan_sweep,
    read_sweep_section,
    render,
    results_table,
)

TINY = ["data.limit=200", "features.image_epochs=1", "features.text_epochs=1",
        "features.image_channels=8", "features.text_hidden=16", "shared_space.epochs=2",
        "training.epochs=2", "testing.robustness=false", "training.register_model=false"]
GRID = {"training.fusion": ["late", "concat"]}


def test_grid_and_seeds_make_cells():
    grid = parse_grid(["training.fusion=late, gmu", "shared_space.loss=l2,infonce"])
    assert grid == {"training.fusion": ["late", "gmu"], "shared_space.loss": ["l2", "infonce"]}
    cells = plan(grid, [0, 1])
    assert len(cells) == 8 and [c.seed for c in cells] == [0] * 4 + [1] * 4
    assert cells[1].name == "training.fusion=late shared_space.loss=infonce seed=0"
    assert cells[1].overrides() == ["seed=0", "training.fusion=late", "shared_space.loss=infonce"]
    assert [c.name for c in plan({}, [3])] == ["base seed=3"]


@pytest.mark.parametrize(("items", "message"), [
    (["training.fusion"], "expected key=value1,value2"),
    (["training.fusion=late,"], "expected key=value1,value2"),
    (["training.fusion=late", "training.fusion=gmu"], "given twice"),
    (["training.fusion=late,late"], "distinct values"),
    (["seed=1,2"], "--seeds"),
    (["run_dir=a,b"], "cannot be swept"),
])
def test_bad_grids_are_one_line_errors(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_sweep_section_of_a_config_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("name: swept\ntraining: {epochs: 3}\n"
                    "sweep:\n  grid:\n    training.fusion: [late, gmu]\n"
                    "    shared_space.lr: [0.001]\n"
                    "  seeds: [0, 1]\n")
    assert read_sweep_section(path) == ({"training.fusion": ["late", "gmu"],
                                         "shared_space.lr": ["0.001"]}, [0, 1])
    cfg = load_config(path)  # the pipeline reads the same file and ignores the section
    assert cfg.name == "swept" and cfg.training.epochs == 3
    path.write_text("sweep:\n  grid: [late]\n")
    with pytest.raises(ConfigError, match="sweep.grid"):
        read_sweep_section(path)
    assert read_sweep_section(None) == ({}, None)


@pytest.mark.parametrize(("section", "message"), [
    ("  seeds: [true]\n", "sweep.seeds.0: Input should be a valid integer"),  # not a count
    ("  seeds: 3\n", "sweep.seeds: Input should be a valid list"),
    ("  gird: {training.fusion: [late]}\n", "sweep.gird: Extra inputs are not permitted"),
    ("  grid: {seed: [1, 2]}\n", "'seed' cannot be swept"),
])
def test_a_bad_sweep_section_is_one_line_naming_the_key(tmp_path, section, message):
    path = tmp_path / "sweep.yaml"
    path.write_text("sweep:\n" + section)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        read_sweep_section(path)
    assert "\n" not in str(caught.value)


def test_plan_sweep_checks_every_cell_before_work():
    grid, seeds, cells = plan_sweep(None, ["seed=4"], {"training.fusion": ["late"]}, None)
    assert seeds == [4] and len(cells) == 1
    with pytest.raises(ConfigError, match="sweep cell training.fusion=fancy seed=0: .*fusion"):
        plan_sweep(None, [], {"training.fusion": ["late", "fancy"]}, [0])


def test_results_table_mean_and_std_over_seeds():
    cells = [{"point": {"training.fusion": f}, "seed": s,
              "metrics": {"test.accuracy": a, "test.macro_f1": a - 0.1}}
             for f, s, a in [("late", 0, 0.8), ("late", 1, 0.9), ("gmu", 0, 0.5)]]
    cells.append({"point": {"training.fusion": "gmu"}, "seed": 1, "error": "RuntimeError: x"})
    table = results_table(cells)
    assert list(table["training.fusion"]) == ["late", "gmu"]
    assert list(table["seeds"]) == ["0,1", "0"] and list(table["failed"]) == [0, 1]
    assert table["test.accuracy.mean"].tolist() == pytest.approx([0.85, 0.5])
    assert table["test.accuracy.std"].tolist() == pytest.approx([0.0707107, 0.0])
    text = render(cells, ["training.fusion"])
    assert text.splitlines()[0].split() == ["training.fusion", "seeds", "accuracy", "macro_f1"]
    assert "0.850 ± 0.071" in text and "1 (1 failed)" in text


def _digests(run_dir: Path, cells: list[dict]) -> dict[tuple[str, str], dict[str, str]]:
    """(cell, stage) -> {Parquet file, or part of a partitioned one: sha256} of each cell's
    stage outputs."""
    out = {}
    for cell in cells:
        for stage, info in cell["stages"].items():
            folder = run_dir / "stages" / stage / info["key"]
            out[cell["cell"], stage] = {
                str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*.parquet")) if p.is_file()}
    return out


def shadow_mmcore(folder: Path) -> Path:
    """A folder like the `code/` folder of a model loaded from MLflow in this process (a model
    from code): a partial `mmcore` without most of its modules. MLflow puts that folder first
    on `sys.path` when the model loads, and spawned Dask workers inherit `sys.path`."""
    (folder / "mmcore" / "io").mkdir(parents=True)
    (folder / "mmcore" / "__init__.py").write_text("")
    (folder / "mmcore" / "io" / "__init__.py").write_text("")
    return folder


@pytest.mark.slow  # 2 sweeps of 2 cells and a 2-worker LocalCluster: ~60 s on an idle machine
def test_sweep_on_two_dask_workers_gives_the_sequential_answers(tmp_path, prefect_harness,
                                                                mlflow_db_template):
    import shutil
    import sys

    import torch

    from flows.sweep import run_sweep

    runs = {}
    threads, path = torch.get_num_threads(), sys.path[:]
    for name, sequential in [("sequential", True), ("dask", False)]:
        run_dir = tmp_path / name
        run_dir.mkdir()
        shutil.copy(mlflow_db_template, run_dir / "mlflow.db")
        # As on a Dask worker (one thread each): torch's CPU sums depend on the thread count.
        torch.set_num_threads(1)
        if not sequential:  # the workers still import the project's mmcore (this hung once)
            sys.path.insert(0, str(shadow_mmcore(tmp_path / "loaded-model-code")))
        try:
            runs[name] = run_dir, run_sweep(overrides=[*TINY, f"run_dir={run_dir}"], grid=GRID,
                                            seeds=[0], workers=2, sequential=sequential)
        finally:
            torch.set_num_threads(threads)
            sys.path[:] = path
    (seq_dir, seq), (dask_dir, par) = runs["sequential"], runs["dask"]
    assert par["executor"] == "Dask LocalCluster, 2 worker processes"
    assert not seq["failed"] and not par["failed"]
    assert [c["cell"] for c in par["cells"]] == [c["cell"] for c in seq["cells"]] == [
        "training.fusion=late seed=0", "training.fusion=concat seed=0"]
    # Same stage keys, same Parquet bytes, same metrics.
    for a, b in zip(seq["cells"], par["cells"], strict=True):
        assert {s: i["key"] for s, i in a["stages"].items()} == \
            {s: i["key"] for s, i in b["stages"].items()}
    assert _digests(seq_dir, seq["cells"]) == _digests(dask_dir, par["cells"])
    for a, b in zip(seq["cells"], par["cells"], strict=True):
        assert a["metrics"] == b["metrics"] and 0.0 <= a["metrics"]["test.accuracy"] <= 1.0
    assert seq["table"] == par["table"]
    # The cells shared their upstream stages: each computed once, by one of the two cells.
    for stage in ("preprocessing", "feature_extraction", "shared_space"):
        states = sorted(c["stages"][stage]["state"] for c in par["cells"])
        assert states == ["hit", "miss"], stage

    client = MlflowClient(f"sqlite:///{dask_dir / 'mlflow.db'}")
    parent = client.get_run(par["sweep_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "sweep"
    assert parent.info.run_name == "sweep · default · training.fusion · seed 0"
    assert parent.data.tags["sweep.executor"] == par["executor"]
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(c["run_id"] for c in par["cells"])
    assert {r.data.tags["sweep.training.fusion"] for r in children} == {"late", "concat"}
    assert all(r.data.tags["kind"] == "sweep-cell" and r.info.status == "FINISHED"
               for r in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.json", "results.csv", "summary.txt", "cells.json"} <= artifacts
    # The parent explains itself: params are what every cell shares, the description the rest.
    assert not {"seed", "training.fusion"} & set(parent.data.params)
    note = parent.data.tags["mlflow.note.content"]
    assert "`training.fusion` = late, concat, on seeds 0: 2 cells" in note
    assert "| late&emsp; | 0&emsp; |" in note and "/artifacts/results.json?workflowType" in note
    assert par["run_url"].endswith(f"/runs/{parent.info.run_id}?workflowType=machine_learning")
    assert client.search_registered_models() == []  # cells register nothing unless asked
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "results.json",
                                                        str(tmp_path))).read_text())
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    assert list(table["training.fusion"]) == ["late", "concat"]
    assert table["test.accuracy.mean"].tolist() == pytest.approx(
        [c["metrics"]["test.accuracy"] for c in par["cells"]])


def test_the_example_sweep_config_plans_18_cells():
    grid, seeds, cells = plan_sweep("configs/sweep.yaml", [], None, None)
    assert grid == {"training.fusion": ["late", "gmu", "concat"],
                    "shared_space.loss": ["l2", "infonce"]}
    assert seeds == [0, 1, 2] and len(cells) == 18
    # --grid keys add to the file's grid; --seeds replace its seeds.
    grid, seeds, cells = plan_sweep("configs/sweep.yaml", [], {"training.hidden": ["32"]}, [5])
    assert list(grid) == ["training.fusion", "shared_space.loss", "training.hidden"]
    assert seeds == [5] and len(cells) == 6


@pytest.mark.parametrize(("args", "message"), [
    ([], "nothing to sweep"),
    (["--grid", "training.fusion=late,fancy"], "sweep cell training.fusion=fancy"),
    (["--grid", "seed=1,2"], "--seeds"),
    (["--grid", "training.fusion=late", "--workers", "0"], "--workers"),
])
def test_sweep_command_line_errors_before_work(args, message, capsys, tmp_path):
    from flows.cli.commands import main

    assert main(["sweep", *args, "--set", f"run_dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "prefect").exists()  # no Prefect server was started


@pytest.mark.parametrize("argv, expected", [
    ([], ("tcp://cfg:8786", 3, False)),
    (["--dask-address", "tcp://cli:8786"], ("tcp://cli:8786", 3, False)),
    (["--workers", "2"], (None, 2, False)),  # a LocalCluster asked for here beats the config's
    (["--sequential"], (None, 3, True)),
])
def test_cells_go_where_the_command_line_or_else_the_config_says(argv, expected):
    from flows.cli.commands import _cluster, build_parser

    args = build_parser().parse_args(["sweep", "--grid", "seed=0,1", *argv])
    cfg = load_config(overrides=["dask.address=tcp://cfg:8786", "dask.workers=3"])
    assert _cluster(args, cfg) == expected
