"""A stage's partitions: one part file each, computed inline or as Prefect tasks on Dask, reused
across attempts of the stage.

A stage body maps a pure `mmcore` function over its input's partitions with `StageRun.map_parts`
(this module's `mapper`). Each part is written under a temporary name and renamed into the
stage key's work folder, `stages/<stage>/.<key>.parts/<dataset>/part-NNNNN.parquet`, which is
not the attempt's temporary output folder: it outlives a failed or killed attempt. A part
already there with the same `part` metadata (index, count, and the digest of what it is
computed from) is reused, so a retry computes only the parts that failed or were never written.
When every part is there they move into the output folder; the stage skeleton then writes the
marker (which covers each part, and which `mark_complete` refuses while one is missing) and
publishes; the work folder goes after publishing. The stage key's lock (`tasks/engine/locks.py`)
keeps
two runs from writing one work folder.

Where parts run (`dask` config section, in no cache key; the parts are the same bytes anywhere):
- `inline`: in the flow's process, as plain calls (no per-part task overhead) on
  `dask.workers` threads (default: one per core). On one machine this is as parallel as a
  LocalCluster, without its start and per-task costs (`benchmarks/README.md`), so `auto` runs
  parts inline unless `dask.address` names a cluster and the input has `dask.min_rows` rows;
- `dask`: one Prefect task per part (`<stage>:<dataset>/part-NNNNN` in the UI) on the cluster of
  `tasks/parallel/dask_cluster.py`, at `dask.address` or a LocalCluster started for the stage. The
  stage task itself runs in the flow's process, so nothing waits on a worker for subtasks (see
  `tasks/parallel/dask_cluster.py`); a stage that is itself running on a Dask worker (a sweep cell)
  runs its parts inline for that reason.
Either way every part is attempted before a failure is raised, so one bad part costs one rerun.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from mmcore.config import PipelineConfig
from mmcore.io.parquet import part_name
from mmcore.io.partitions import MapParts, move_parts, one_thread, part_meta, reusable
from tasks import faults


class PartitionsFailed(RuntimeError):
    """Some parts of a stage's dataset failed; the others are kept for the next attempt."""


def work_dir(final: Path) -> Path:
    """The stage key's work folder, beside its output folder `stages/<stage>/<key>`."""
    return final.with_name(f".{final.name}.parts")


@task(name="partition", cache_policy=NO_CACHE, persist_result=False)
def partition_task(stage: str, work: Callable[..., None], job: dict[str, Any], out: str) -> str:
    """One part, on a Dask worker: the pure function writes the part file atomically."""
    faults.point(stage, "partition")
    work(**job, out=Path(out))
    return out


def _on_a_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def where(cfg: PipelineConfig, rows: int, parts: int) -> str:
    """'inline' or 'dask' for `parts` parts to compute over `rows` input rows."""
    mode = cfg.dask.partitions
    if mode == "auto":  # a cluster beyond this machine, for data worth sending there
        big = rows >= cfg.dask.min_rows and parts > 1
        mode = "dask" if cfg.dask.address and big else "inline"
    return "inline" if mode == "dask" and _on_a_dask_worker() else mode


def _threads(cfg: PipelineConfig) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cfg.dask.workers or cores


def _inline(cfg: PipelineConfig, stage: str, work: Callable[..., None],
            todo: list[tuple[dict, Path]]) -> list[str]:
    """Parts side by side on threads of this process, each running torch on one thread (torch
    releases the GIL): the parallelism of Dask's single-threaded workers without starting a
    cluster, and the same bytes."""
    def one(job: dict, path: Path) -> str | None:
        try:
            faults.point(stage, "partition")
            work(**job, out=path)
        except Exception as exc:  # noqa: BLE001 -- every part is attempted; raised below
            return f"{path.name}: {type(exc).__name__}: {exc}"
        return None

    with one_thread(), ThreadPoolExecutor(_threads(cfg)) as pool:
        outcomes = list(pool.map(lambda item: one(*item), todo))
    return [failure for failure in outcomes if failure]


def _dask(cfg: PipelineConfig, stage: str, dataset: str, work: Callable[..., None],
          todo: list[tuple[dict, Path]]) -> list[str]:
    from tasks.parallel.dask_cluster import dask_task_runner

    failed = []
    with dask_task_runner(cfg.dask.address, cfg.dask.workers) as runner:
        futures = [runner.submit(partition_task.with_options(
            task_run_name=f"{stage}:{dataset}/{path.stem}"),
            parameters={"stage": stage, "work": work, "job": job, "out": str(path)})
            for job, path in todo]
        for future, (_, path) in zip(futures, todo, strict=True):
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 -- every part is awaited; raised below
                failed.append(f"{path.name}: {type(exc).__name__}: {exc}")
    return failed


def mapper(cfg: PipelineConfig, stage: str, final: Path, out: Path, rows: int,
           record: dict[str, dict[str, Any]]) -> MapParts:
    """The `MapParts` of one attempt of a stage: parts in the key's work folder, reused when an
    earlier attempt left them, then moved into `out`. `rows`: the stage's input rows (for
    `auto`); `record` gets per dataset its part count, how many were reused and where the
    others ran."""
    def run_parts(name: str, work: Callable[..., None], jobs: list[dict[str, Any]],
                  source: str) -> Path:
        folder = work_dir(final) / name
        folder.mkdir(parents=True, exist_ok=True)
        todo = []
        for index, job in enumerate(jobs):
            job = {**job, "meta": part_meta(job, index, len(jobs), source)}
            path = folder / part_name(index)
            if not reusable(path, job["meta"]["part"]):
                todo.append((job, path))
        ran = where(cfg, rows, len(todo)) if todo else "nowhere"
        reused = len(jobs) - len(todo)
        computed = (f"{len(todo)} computed " + ("in this process" if ran == "inline"
                                                else f"on {ran}")) if todo else "none to compute"
        get_run_logger().info("%s %s: %d part%s%s, %s", stage, name, len(jobs),
                              "" if len(jobs) == 1 else "s",
                              f", {reused} reused from an earlier attempt" if reused else "",
                              computed)
        failed = (_dask(cfg, stage, name, work, todo) if ran == "dask"
                  else _inline(cfg, stage, work, todo))
        record[name] = {"parts": len(jobs), "reused": reused, "where": ran}
        if failed:
            raise PartitionsFailed(
                f"{stage}: {len(failed)} of {len(jobs)} parts of {name} failed (the other "
                f"parts are kept in {folder} for the next attempt): {'; '.join(failed[:3])}")
        move_parts(folder, out / name, len(jobs))
        return out / name
    return run_parts
