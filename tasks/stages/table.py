"""The five stages in order, each with its Prefect task and what its cache key needs beyond the
config: a fingerprint of the raw files (preprocessing), the learning mode's space (feature
extraction and the shared space, whose config sections do not say which labels they may use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task

from mmcore.config import STAGES, PipelineConfig
from tasks.engine import cache
from tasks.engine.keys import StageRef
from tasks.engine.outputs import completed
from tasks.stages.feature_extraction import feature_extraction_task
from tasks.stages.feature_extraction import key_extra as feature_extraction_key_extra
from tasks.stages.preprocessing import key_extra as preprocessing_key_extra
from tasks.stages.preprocessing import preprocessing_task
from tasks.stages.shared_space import key_extra as shared_space_key_extra
from tasks.stages.shared_space import shared_space_task
from tasks.stages.testing import testing_task
from tasks.stages.training import training_task

TASKS: dict[str, Task] = {
    "preprocessing": preprocessing_task,
    "feature_extraction": feature_extraction_task,
    "shared_space": shared_space_task,
    "training": training_task,
    "testing": testing_task,
}
KEY_EXTRA: dict[str, Callable[[PipelineConfig], dict[str, Any]]] = {
    "preprocessing": preprocessing_key_extra,
    # The learning mode's space: which encoders and projections see labels.
    "feature_extraction": feature_extraction_key_extra,
    "shared_space": shared_space_key_extra,
}
assert tuple(TASKS) == STAGES


def _extra(stage: str, cfg: PipelineConfig) -> dict[str, Any] | None:
    return KEY_EXTRA[stage](cfg) if stage in KEY_EXTRA else None


def run(stage: str, cfg: PipelineConfig, upstream: dict[str, StageRef], parent_run_id: str,
        refresh: bool = False) -> tuple[StageRef, str]:
    """Run one stage through the cache; (ref, 'hit' | 'miss')."""
    return cache.run_stage(TASKS[stage], stage, cfg, upstream, parent_run_id, refresh=refresh,
                            extra=_extra(stage, cfg))


def cached(stage: str, cfg: PipelineConfig, upstream: dict[str, StageRef]) -> StageRef | None:
    """The stage's complete output for this config, if there is one (nothing runs)."""
    key, state, _ = cache.status(cfg, stage, {k: v.key for k, v in upstream.items()},
                                  _extra(stage, cfg))
    return completed(cfg, stage, key) if state == "hit" else None


def status_all(cfg: PipelineConfig) -> list[dict[str, str]]:
    """Every stage's cache state for `cfg` -- hit or miss, and why -- without running anything."""
    keys: dict[str, str] = {}
    rows = []
    for stage in STAGES:
        key, state, reason = cache.status(cfg, stage, dict(keys), _extra(stage, cfg))
        keys[stage] = key
        rows.append({"stage": stage, "key": key, "state": state, "reason": reason})
    return rows
