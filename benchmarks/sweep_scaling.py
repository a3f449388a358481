"""Wall time of a 20-cell `mmpipe sweep` of the built-in data on 1 and 2 Dask workers.

Usage:
  python benchmarks/sweep_scaling.py [--workers 1 2] [--sequential] [--run-dir DIR] [--set k=v]

The cells are cheap on purpose, so that the figures show what the engine adds: 10 grid points
of the training stage (5 fusion operators x 2 hidden sizes) on 2 seeds, over upstream stages
(preprocessing, feature extraction, the shared space) computed once per seed beforehand
(`mmpipe run --stages fusion`). Each timed sweep starts from a copy of that warm run folder, so
each computes the same 20 training and testing stages, and runs as a user runs it: `mmpipe
sweep` in a fresh process, against the run folder's local Prefect server (started before the
clock, as it is for a user's second command). Reported per executor: the command's wall time
(Python start, LocalCluster start and stop included), the sweep's own time (its MLflow parent
run, cells only), the ratio to one worker, and the CPU seconds the command and its workers used
(`cores used` = CPU / wall: what the machine gave it); with the load average, since this
machine is shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MMPIPE = str(Path(sys.executable).with_name("mmpipe"))
GRID = ["training.fusion=late,concat,sum,gmu,lmf", "training.hidden=32,64"]
SEEDS = ["0", "1"]
CHEAP = ["testing.robustness=false"]  # robustness curves re-run the encoders 11 x 6 times


def mmpipe(run_dir: Path, *args: str, overrides: list[str]) -> str:
    sets = [a for o in [f"run_dir={run_dir}", *overrides] for a in ("--set", o)]
    done = subprocess.run([MMPIPE, *args, *sets], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mmpipe {' '.join(args)} failed:\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return done.stdout


def warm(run_dir: Path, overrides: list[str]) -> float:
    """The upstream stages of every seed, in `run_dir`; returns the seconds it took."""
    start = time.perf_counter()
    for seed in SEEDS:
        mmpipe(run_dir, "run", "--stages", "shared_space", overrides=[*overrides, f"seed={seed}"])
    mmpipe(run_dir, "server", "stop", overrides=overrides)
    return time.perf_counter() - start


def sweep_seconds(run_dir: Path) -> tuple[float, int]:
    """(duration of the newest sweep run in MLflow, its finished child runs)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    run = client.search_runs(experiments, "tags.kind = 'sweep'",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    children = client.search_runs(experiments,
                                  f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    finished = sum(c.info.status == "FINISHED" for c in children)
    return (run.info.end_time - run.info.start_time) / 1000, finished


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes and theirs: the command, its
    Dask workers (the command waits for them) and everything they ran."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_sweep(warm_dir: Path, run_dir: Path, where: list[str],
                overrides: list[str]) -> dict[str, float | str]:
    shutil.copytree(warm_dir, run_dir)
    mmpipe(run_dir, "server", "start", overrides=overrides)
    try:
        load_before = os.getloadavg()[0]
        cpu_before = _children_cpu()
        start = time.perf_counter()
        grid = [a for g in GRID for a in ("--grid", g)]
        out = mmpipe(run_dir, "sweep", *grid, "--seeds", *SEEDS, *where, overrides=overrides)
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu_before
        load_after = os.getloadavg()[0]
    finally:
        mmpipe(run_dir, "server", "stop", overrides=overrides)
    inner, finished = sweep_seconds(run_dir)
    print(out.strip().split("\n\n")[-2] if "\n\n" in out else out, flush=True)
    return {"where": " ".join(where), "wall": wall, "sweep": inner, "cells": finished, "cpu": cpu,
            "load": f"{load_before:.1f} -> {load_after:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sequential", action="store_true",
                        help="also time the sweep without Dask, in the command's process")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "bench-sweep")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = [*CHEAP, *args.overrides]
    shutil.rmtree(args.run_dir, ignore_errors=True)
    warm_dir = args.run_dir / "warm"
    print(f"warming the upstream stages of seeds {', '.join(SEEDS)} ...", flush=True)
    print(f"  {warm(warm_dir, overrides):.0f} s", flush=True)
    runs = [["--workers", str(n)] for n in args.workers]
    runs += [["--sequential"]] if args.sequential else []
    results = []
    for where in runs:
        print(f"\nmmpipe sweep {' '.join(where)}: 20 cells", flush=True)
        results.append(timed_sweep(warm_dir, args.run_dir / "-".join(where).strip("-"), where,
                                   overrides))
    one = next((r for r in results if r["where"] == "--workers 1"), results[0])
    print(f"\n{'executor':<14} {'cells':>5} {'command s':>10} {'sweep s':>8} "
          f"{'s/cell':>7} {'x vs 1 worker':>14} {'CPU s':>6} {'cores used':>10}  "
          "load avg (1 min)")
    for r in results:
        print(f"{r['where']:<14} {r['cells']:>5} {r['wall']:>10.1f} {r['sweep']:>8.1f} "
              f"{r['sweep'] / max(r['cells'], 1):>7.2f} {one['sweep'] / r['sweep']:>14.2f} "
              f"{r['cpu']:>6.0f} {r['cpu'] / r['wall']:>10.2f}  {r['load']}")


if __name__ == "__main__":
    main()
