"""Run one stage through Prefect's cache, and account for it: hit or miss, why, in the log and in
MLflow (a child run also for a hit, tagged `cache=hit` with the run that produced the output)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger

from mmcore.config import PipelineConfig
from mmcore.parquet_io import write_json
from tasks import tracking
from tasks.stage import StageRef, completed, stage_code, stage_dir, stage_key


def _latest_path(cfg: PipelineConfig, stage: str) -> Path:
    return Path(cfg.run_dir) / "stages" / stage / "latest.json"


def miss_reason(cfg: PipelineConfig, stage: str, key: str, upstream: dict[str, str],
                extra: dict[str, Any] | None = None) -> str:
    """Why a stage has no output for this config, compared with its last run: its upstream
    first (a stage after a changed one misses because of it), then its config, then its code."""
    if stage_dir(cfg, stage, key).exists():
        return "output folder lacks its completion marker (interrupted or corrupted)"
    try:
        last = json.loads(_latest_path(cfg, stage).read_text())
    except (OSError, ValueError):
        return "never ran in this run directory"
    if last["key"] == key:
        return "its output folder was deleted"
    moved = sorted(k for k, v in upstream.items() if last["upstream"].get(k) != v)
    if moved:
        return f"upstream output changed: {', '.join(moved)}"
    changed = sorted(k for k, v in cfg.section(stage).items() if last["config"].get(k) != v)
    if changed:
        return f"config changed: {', '.join(changed)}"
    code = stage_code(cfg, stage)
    edited = sorted(m for m in code.keys() | last.get("code", {}).keys()
                    if code.get(m) != last.get("code", {}).get(m))
    if edited:
        return f"code changed: {', '.join(edited)}"
    if last.get("extra") != json.loads(json.dumps(extra)):
        return "raw input files changed"
    return "library versions (torch, pyarrow) changed"


def status(cfg: PipelineConfig, stage: str, upstream: dict[str, str],
           extra: dict[str, Any] | None = None) -> tuple[str, str, str]:
    """(key, 'hit' | 'miss', reason) for one stage, without running anything."""
    key = stage_key(stage, cfg, upstream, extra)
    if completed(cfg, stage, key):
        return key, "hit", f"complete output at {stage_dir(cfg, stage, key)}"
    return key, "miss", miss_reason(cfg, stage, key, upstream, extra)


def run_stage(stage_task: Task, stage: str, cfg: PipelineConfig, upstream: dict[str, StageRef],
              parent_run_id: str, *, refresh: bool = False,
              extra: dict[str, Any] | None = None) -> tuple[StageRef, str]:
    """Run (or take from cache) one stage task; log hit/miss and why. Returns (ref, hit|miss)."""
    logger = get_run_logger()
    upstream_keys = {k: v.key for k, v in upstream.items()}
    key, state, reason = status(cfg, stage, upstream_keys, extra)
    if refresh:
        state, reason = "miss", "refresh requested"
    task = stage_task.with_options(
        result_storage=(Path(cfg.run_dir) / "prefect-results").resolve(),
        refresh_cache=state == "miss",
    )
    if state == "miss":
        logger.info("%s: running (cache miss: %s)", stage, reason)
    run_state = task(cfg, upstream, key, parent_run_id, return_state=True)
    ref: StageRef = run_state.result()
    hit = run_state.name == "Cached"
    if not hit and state == "hit":
        logger.info("%s: ran again: its output is complete but Prefect had no cache record "
                    "for key %s (result storage cleared?)", stage, key)
    if hit:
        logger.info("%s: cache hit, key %s (output by MLflow run %s)", stage, key, ref.run_id)
        run_id = tracking.start_child_run(
            cfg, parent_run_id, stage, key, cache="hit",
            tags={"cache.produced_by_run": ref.run_id or "",
                  "mlflow.note.content": tracking.produced_by_note(cfg, ref.run_id)},
            metrics=ref.summary.get("metrics", {}))
        tracking.log_parquet_inputs(cfg, run_id, sorted(Path(ref.path).glob("*.parquet")), key,
                                    "output")
        tracking.end_run(cfg, run_id)
    write_json(_latest_path(cfg, stage), {"key": key, "config": cfg.section(stage),
                                          "upstream": upstream_keys,
                                          "code": stage_code(cfg, stage), "extra": extra})
    return ref, "hit" if hit else "miss"
