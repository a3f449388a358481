"""What every stage task shares: its cache key, its output folder, its MLflow child run.

- The cache key of a stage = digest(stage, its config section, its inputs' keys, the stage's code
  version, torch/pyarrow versions) -- `stage_key`, computable from the config alone (so `status`
  can answer without running anything). `StagePolicy` hands it to Prefect.
- Outputs go to `<run_dir>/stages/<stage>/<key>/`, written in a temporary sibling folder that is
  renamed into place after its completion marker is written: a folder without the marker does
  not exist for anyone.
- A task returns a `StageRef` (path + key + the MLflow run that produced it + a small summary),
  which Prefect persists; never a DataFrame.
"""

from __future__ import annotations

import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from mmcore.config import PipelineConfig, digest
from mmcore.parquet_io import mark_complete, read_marker
from tasks import tracking

# Bump a stage's version when its code changes what it writes: that invalidates its cache.
STAGE_VERSIONS = {
    "preprocessing": 1,
    "feature_extraction": 2,
    "fusion": 1,
    "training": 1,
    "testing": 1,
}


class StageRef(BaseModel):
    """What a stage task returns and Prefect persists: where its output is, not the output."""

    stage: str
    key: str
    path: str
    run_id: str | None = None  # MLflow run that produced the output
    summary: dict[str, Any] = {}


def stage_key(stage: str, cfg: PipelineConfig, upstream_keys: dict[str, str],
              extra: dict[str, Any] | None = None) -> str:
    return digest({
        "stage": stage,
        "version": STAGE_VERSIONS[stage],
        "config": cfg.section(stage),
        "upstream": upstream_keys,
        "extra": extra or {},
        # Versions from package metadata: a fully cached run never imports torch.
        "torch": version("torch"),
        "pyarrow": version("pyarrow"),
    })


def stage_dir(cfg: PipelineConfig, stage: str, key: str) -> Path:
    return Path(cfg.run_dir) / "stages" / stage / key


@dataclass
class StagePolicy(CachePolicy):
    """Prefect cache policy: the stage's key from the task's `key` input, nothing else.

    Prefect's default policy includes the flow-run id (so nothing is shared across runs) and
    TASK_SOURCE hashes differ under `serve`; this one depends only on config and inputs.
    """

    stage: str = ""

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any],
                    flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        return f"{self.stage}-{inputs['key']}"


@dataclass
class StageOutput:
    """A stage's output folder being written; `finish` makes it exist."""

    stage: str
    key: str
    final: Path
    tmp: Path
    upstream: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def file_meta(self) -> dict[str, Any]:
        """Schema metadata every Parquet file of this stage carries."""
        return {"stage": self.stage, "cache_key": self.key, "upstream": self.upstream}

    def finish(self, run_id: str | None) -> StageRef:
        ref = StageRef(stage=self.stage, key=self.key, path=str(self.final), run_id=run_id,
                       summary=self.summary)
        mark_complete(self.tmp, ref.model_dump())
        if self.final.exists():  # an incomplete leftover of an interrupted run
            shutil.rmtree(self.final)
        self.tmp.rename(self.final)
        return ref


@contextmanager
def stage_output(cfg: PipelineConfig, stage: str, key: str, upstream: dict[str, StageRef]):
    """A temporary folder beside the final one; removed if the stage fails."""
    final = stage_dir(cfg, stage, key)
    tmp = final.with_name(f".{key}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    out = StageOutput(stage, key, final, tmp, {k: v.key for k, v in upstream.items()})
    try:
        yield out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def completed(cfg: PipelineConfig, stage: str, key: str) -> StageRef | None:
    """The StageRef recorded in a complete output folder, or None."""
    marker = read_marker(stage_dir(cfg, stage, key))
    return StageRef.model_validate(marker) if marker else None


@contextmanager
def child_run(cfg: PipelineConfig, parent_run_id: str, stage: str, key: str):
    """The stage's MLflow child run (cache=miss), FAILED if the stage raises."""
    run_id = tracking.start_child_run(cfg, parent_run_id, stage, key, cache="miss")
    try:
        yield run_id
    except BaseException:
        tracking.end_run(cfg, run_id, "FAILED")
        raise
    tracking.end_run(cfg, run_id)



def publish(cfg: PipelineConfig, out: StageOutput, run_id: str) -> StageRef:
    """Make the stage's output exist, then record its Parquet files as the run's outputs."""
    ref = out.finish(run_id)
    tracking.log_parquet_inputs(cfg, run_id, sorted(out.final.glob("*.parquet")), out.key,
                                "output")
    return ref
