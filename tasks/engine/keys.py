"""A stage's identity in the cache: its key, its output folder, and what its task returns.

The cache key = digest(stage, its config section, its inputs' keys, a fingerprint of the code it
runs, torch/pyarrow versions), computable from the config alone, so `mmpipe status` answers
without running anything. `StagePolicy` hands it to Prefect. Outputs live in
`<run_dir>/stages/<stage>/<key>/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from mmcore.config import PipelineConfig, digest
from tasks.engine.fingerprint import fingerprint, module_digests


class StageRef(BaseModel):
    """What a stage task returns and Prefect persists: where its output is, not the output."""

    stage: str
    key: str
    path: str
    run_id: str | None = None  # MLflow run that produced the output
    summary: dict[str, Any] = {}


def stage_code(cfg: PipelineConfig, stage: str) -> dict[str, str]:
    """Digest per module of the code `stage` runs: its task module and the mmcore modules it
    reaches (`tasks/engine/fingerprint.py`)."""
    return code_digests(cfg, f"tasks.stages.{stage}")


def code_digests(cfg: PipelineConfig, module: str) -> dict[str, str]:
    """Digest per module of `module` and the mmcore modules it reaches (per-file digests kept in
    the run folder between processes)."""
    return module_digests(module, cache_file=Path(cfg.run_dir) / "code-digests.json")


def stage_key(stage: str, cfg: PipelineConfig, upstream_keys: dict[str, str],
              extra: dict[str, Any] | None = None) -> str:
    return digest({
        "stage": stage,
        "code": fingerprint(stage_code(cfg, stage)),
        "config": cfg.section(stage),
        "upstream": upstream_keys,
        "extra": extra or {},
        # Versions from package metadata: a fully cached run never imports torch.
        "torch": version("torch"),
        "pyarrow": version("pyarrow"),
    })


def batch_cache(cfg: PipelineConfig, stage: str) -> Path:
    """Where a stage keeps its per-batch outputs of batched data (docs/batches.md): a folder per
    version of the stage's code and libraries, so an edit never reuses an older output."""
    salt = digest({"code": fingerprint(stage_code(cfg, stage)), "torch": version("torch"),
                   "pyarrow": version("pyarrow")})
    return Path(cfg.run_dir) / "batch-cache" / stage / salt


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
