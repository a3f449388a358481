"""Run one stage through Prefect's cache, and account for it: hit or miss, why, in the log and in
MLflow (a child run also for a hit, tagged `cache=hit` with the run that produced the output).

A hit needs more than Prefect's cache record: the output folder's files must match its marker
(a truncated or altered file makes the stage run again, and the reason names the file), and the
upstream outputs it was built from must still have the content they had then. The whole
decide-run-publish sequence holds the stage key's lock (`tasks/engine/locks.py`): a second run of
the
same config waits, then finds the output and reports a hit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger
from prefect.transactions import CommitMode, transaction

from mmcore.config import PipelineConfig
from mmcore.io.parquet import write_json
from tasks.engine import locks, results
from tasks.engine.keys import StageRef, stage_code, stage_dir, stage_key
from tasks.engine.outputs import completed, content, verified
from tasks.tracking import runs


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
    before, now = last.get("extra") or {}, json.loads(json.dumps(extra or {}))
    if before != now:
        keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if "space" in keys:  # feature extraction, fusion: the learning mode's space
            return f"learning space changed: {before.get('space')} -> {now.get('space')}"
        return "raw input files changed"
    return "library versions (torch, pyarrow) changed"


def _rebuilt_upstream(cfg: PipelineConfig, marker: dict[str, Any],
                      upstream: dict[str, str]) -> list[str]:
    """Upstream stages whose output now has other content than when this output was built (an
    upstream rebuilt after damage, not bit for bit the same). A missing upstream is not counted:
    it is rebuilt first, and compared then."""
    recorded = marker.get("upstream_content") or {}
    now = {name: content(cfg, name, key) for name, key in upstream.items()}
    return sorted(name for name, digest in now.items()
                  if digest is not None and recorded.get(name) not in (None, digest))


def status(cfg: PipelineConfig, stage: str, upstream: dict[str, str],
           extra: dict[str, Any] | None = None, key: str | None = None,
           ) -> tuple[str, str, str]:
    """(key, 'hit' | 'miss', reason) for one stage, without running anything."""
    key = key or stage_key(stage, cfg, upstream, extra)
    marker, problems = verified(cfg, stage, key)
    if marker is None:
        return key, "miss", miss_reason(cfg, stage, key, upstream, extra)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3
                                           else "")
        return key, "miss", f"damaged output: {shown}"
    rebuilt = _rebuilt_upstream(cfg, marker, upstream)
    if rebuilt:
        return key, "miss", (f"upstream output changed: {', '.join(rebuilt)} was rebuilt with "
                             "other content")
    return key, "hit", f"complete output at {stage_dir(cfg, stage, key)}"


def run_stage(stage_task: Task, stage: str, cfg: PipelineConfig, upstream: dict[str, StageRef],
              parent_run_id: str, *, refresh: bool = False,
              extra: dict[str, Any] | None = None) -> tuple[StageRef, str]:
    """Run (or take from cache) one stage task; log hit/miss and why. Returns (ref, hit|miss)."""
    upstream_keys = {k: v.key for k, v in upstream.items()}
    key = stage_key(stage, cfg, upstream_keys, extra)
    logger = get_run_logger()

    def waiting(holder: str) -> None:
        logger.info("%s: waiting for %s, which is computing key %s", stage, holder, key)

    with locks.stage_lock(cfg.run_dir, stage, key, on_wait=waiting):
        return _run_locked(stage_task, stage, cfg, upstream, parent_run_id, key, refresh, extra)


def _run_locked(stage_task: Task, stage: str, cfg: PipelineConfig,
                upstream: dict[str, StageRef], parent_run_id: str, key: str, refresh: bool,
                extra: dict[str, Any] | None) -> tuple[StageRef, str]:
    logger = get_run_logger()
    upstream_keys = {k: v.key for k, v in upstream.items()}
    key, state, reason = status(cfg, stage, upstream_keys, extra, key=key)
    if refresh:
        state, reason = "miss", "refresh requested"
    replaced = results.replace_foreign_record(
        cfg, stage, key, lambda: completed(cfg, stage, key) if state == "hit" else None)
    if replaced:
        logger.warning("%s: %s", stage, replaced)
    task = stage_task.with_options(result_storage=results.folder(cfg),
                                   refresh_cache=state == "miss")
    if state == "miss":
        logger.info("%s: running (cache miss: %s)", stage, reason)
    # Commit Prefect's cache record now, under the lock: inside another task's transaction (a
    # sweep's cell on a Dask worker) it would be deferred to the end of that task, and a cell
    # waiting for this key would find the output but no record, and compute it again.
    with transaction(commit_mode=CommitMode.EAGER):
        run_state = task(cfg, upstream, key, parent_run_id, return_state=True)
    ref = results.stage_ref(run_state.result())  # read from the cache: JSON
    hit = run_state.name == "Cached"
    if not hit and state == "hit":
        logger.info("%s: ran again: its output is complete but Prefect had no cache record "
                    "for key %s (result storage cleared?)", stage, key)
    if hit:
        logger.info("%s: cache hit, key %s (output by MLflow run %s)", stage, key, ref.run_id)
        run_id = runs.start_child_run(
            cfg, parent_run_id, stage, key, cache="hit",
            tags={"cache.produced_by_run": ref.run_id or "",
                  "mlflow.note.content": runs.produced_by_note(cfg, ref.run_id)},
            metrics=ref.summary.get("metrics", {}))
        runs.log_parquet_inputs(cfg, run_id, sorted(Path(ref.path).glob("*.parquet")), key,
                                    "output")
        runs.end_run(cfg, run_id)
    write_json(_latest_path(cfg, stage), {"key": key, "config": cfg.section(stage),
                                          "upstream": upstream_keys,
                                          "code": stage_code(cfg, stage), "extra": extra})
    return ref, "hit" if hit else "miss"
