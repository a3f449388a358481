"""The skeleton every stage task shares, written once: cache key, output folder, MLflow child run.

A stage module holds only what is its own: a body `(run: StageRun) -> summary` that reads its
inputs, calls `mmcore`, and logs its metrics and artifacts. `stage_task` wraps it into the
Prefect task and does the rest:

- The cache key = digest(stage, its config section, its inputs' keys, a fingerprint of the code
  it runs, torch/pyarrow versions) -- `stage_key`, computable from the config alone (so `status`
  answers without running anything). `StagePolicy` hands it to Prefect.
- Outputs go to `<run_dir>/stages/<stage>/<key>/`, written in a temporary sibling folder that is
  renamed into place after its completion marker is written: a folder without the marker does
  not exist for anyone. The marker lists each file's size and digest, and records the content
  digest of each upstream folder the stage read, so a damaged output, or one built on an
  upstream that was rebuilt differently since, is not a cache hit (`verified`).
- Before the body runs, its upstream folders are checked against their markers: a damaged input
  is an error naming the file, never a pyarrow traceback.
- The stage's MLflow child run (FAILED if the body raises), its upstream Parquet files logged as
  dataset inputs and its own as outputs, per-epoch metrics flushed at the end.
- A body that maps over partitions of its input (`run.map_parts`, `tasks/parallel/partitions.py`)
  computes the parts in the key's work folder, which outlives a failed attempt so that the
  next one reuses the parts already done; they move into the temporary folder before the
  marker, and the work folder goes once the output is published.
- The task returns a `StageRef` (path + key + the MLflow run that produced it + a small summary),
  which Prefect persists; never a DataFrame.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from mmcore.config import PipelineConfig, digest
from mmcore.io.parquet import mark_complete, read_marker, verify_folder
from mmcore.io.partitions import MapParts
from tasks.engine import faults
from tasks.engine.fingerprint import fingerprint, module_digests
from tasks.parallel import partitions
from tasks.tracking import runs


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
    return module_digests(f"tasks.stages.{stage}", cache_file=Path(cfg.run_dir) / "code-digests.json")


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
class StageRun:
    """What a stage body works with: the config, its inputs, a temporary output folder and its
    MLflow run. Metrics logged here also go into the stage's summary (shown again on cache hits)."""

    cfg: PipelineConfig
    stage: str
    key: str
    upstream: dict[str, StageRef]
    out: Path  # temporary output folder; becomes the stage's folder when the body succeeds
    run_id: str
    epochs: runs.EpochLogger
    metrics: dict[str, float] = field(default_factory=dict)
    # per partitioned dataset: parts, how many an earlier attempt left, where the others ran
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def map_parts(self, rows: int) -> MapParts:
        """How this attempt computes a partitioned dataset (`tasks/parallel/partitions.py`): parts kept
        in the key's work folder across attempts, inline or on Dask by `cfg.dask`. `rows`: the
        input rows the parts cover (small inputs run inline)."""
        return partitions.mapper(self.cfg, self.stage, stage_dir(self.cfg, self.stage, self.key),
                                 self.out, rows, self.parts)

    @property
    def file_meta(self) -> dict[str, Any]:
        """Schema metadata every Parquet file of this stage carries."""
        return {"stage": self.stage, "cache_key": self.key,
                "upstream": {k: v.key for k, v in self.upstream.items()}}

    def path(self, stage: str) -> Path:
        """An upstream stage's output folder."""
        return Path(self.upstream[stage].path)

    def summary(self, stage: str) -> dict[str, Any]:
        return self.upstream[stage].summary

    def log_metrics(self, metrics: dict[str, float]) -> None:
        faults.point(self.stage, "metrics")
        self.metrics.update(metrics)
        runs.log_metrics(self.cfg, self.run_id, metrics)

    def log_artifacts(self, *names: str) -> None:
        """Files of the output folder, by name, as artifacts of the stage's run."""
        for name in names:
            runs.log_artifacts(self.cfg, self.run_id, [self.out / name])
            faults.point(self.stage, "artifacts")

    def set_tags(self, tags: dict[str, str]) -> None:
        runs.set_tags(self.cfg, self.run_id, tags)

    def progress(self, part: str, progress: Any) -> None:
        """A training loop's progress (`mmcore.training.loop.Progress`) as one log line: the
        terminal and the flow run's Prefect logs show it."""
        get_run_logger().info("%s %s: %s", self.stage, part, progress.line())

    def plot_curves(self) -> None:
        """Per trained part (an encoder, the shared space, the classifier): train and val curves
        overlaid in one PNG, and its `summary/<part.>best_epoch` as a metric."""
        from mmcore.metrics import best_epoch, plot_learning_curves

        for prefix, history in self.epochs.history.items():
            part = prefix.rstrip(".") or self.stage
            best = best_epoch(history)
            if best is not None:
                self.log_metrics({f"{runs.SUMMARY}{prefix}best_epoch": best})
            name = f"curves_{part}.png"
            plot_learning_curves(history, self.out / name, f"{self.stage}: {part}")
            self.log_artifacts(name)


class _Epochs(runs.EpochLogger):
    """The stage's per-epoch metrics, with a fault-injection point per epoch."""

    def __init__(self, cfg: PipelineConfig, run_id: str, stage: str):
        super().__init__(cfg, run_id)
        self.stage = stage

    def __call__(self, epoch: int, record: dict[str, float], prefix: str | None = None) -> None:
        faults.point(self.stage, "epoch")
        super().__call__(epoch, record, prefix)


class DamagedOutput(RuntimeError):
    """A stage output that no longer matches its completion marker."""


def verified(cfg: PipelineConfig, stage: str, key: str,
             ) -> tuple[dict[str, Any] | None, list[str]]:
    """(marker, problems) of the stage's output folder for `key`: (None, []) when there is no
    complete folder; problems name each missing, truncated, altered or added file."""
    marker, problems = verify_folder(stage_dir(cfg, stage, key))
    return marker, [str(p) for p in problems]


def _check_inputs(stage: str, upstream: dict[str, StageRef]) -> dict[str, str]:
    """Each upstream folder checked against its marker right before the body reads it; returns
    their content digests (recorded in this stage's marker)."""
    contents = {}
    for name, ref in upstream.items():
        marker, problems = verify_folder(ref.path)
        if marker is None or problems:
            what = "; ".join(problems) or "its completion marker is gone"
            raise DamagedOutput(f"{stage}: its input {name} at {ref.path} is damaged: {what}. "
                                f"The next run rebuilds {name}.")
        contents[name] = marker["content"]
    return contents


@contextmanager
def _output_folder(cfg: PipelineConfig, stage: str, key: str):
    """A temporary folder beside the final one, `.<key>.<pid>-<random>.tmp`; removed if the
    stage fails, and by `tasks/engine/recovery.py` if its process died."""
    final = stage_dir(cfg, stage, key)
    tmp = final.with_name(f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        yield final, tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(final: Path, tmp: Path, ref: StageRef, upstream_content: dict[str, str]) -> None:
    """Marker last, then rename: the output exists all at once or not at all."""
    mark_complete(tmp, {**ref.model_dump(), "upstream_content": upstream_content})
    faults.point(ref.stage, "publish")
    if final.exists():  # a damaged or outdated output, replaced under the stage's lock
        shutil.rmtree(final)
    tmp.rename(final)
    shutil.rmtree(partitions.work_dir(final), ignore_errors=True)  # its parts are in `final`


Body = Callable[[StageRun], dict[str, Any]]


def stage_task(stage: str, reads: dict[str, str] | None = None):
    """Make `body(run) -> summary` the stage's Prefect task.

    `reads` maps the upstream stages whose Parquet files the body reads to the MLflow dataset
    context they are logged under ("input", "training", "testing").
    """
    def decorate(body: Body):
        def run_stage(cfg: PipelineConfig, upstream: dict[str, StageRef], key: str,
                      parent_run_id: str) -> StageRef:
            upstream_content = _check_inputs(stage, upstream)
            with _output_folder(cfg, stage, key) as (final, tmp):
                run_id = runs.start_child_run(cfg, parent_run_id, stage, key, cache="miss")
                try:
                    for name, context in (reads or {}).items():
                        runs.log_parquet_inputs(
                            cfg, run_id, sorted(Path(upstream[name].path).glob("*.parquet")),
                            upstream[name].key, context)
                    run = StageRun(cfg, stage, key, upstream, tmp, run_id,
                                   _Epochs(cfg, run_id, stage))
                    faults.point(stage, "start")
                    summary = body(run)
                    run.epochs.flush()
                    run.plot_curves()
                    if run.parts:
                        summary = {**summary, "partitions": run.parts}
                        run.set_tags({f"partitions.{name}": f"{p['parts']} parts, {p['reused']} "
                                      f"reused, the rest {p['where']}"
                                      for name, p in run.parts.items()})
                    ref = StageRef(stage=stage, key=key, path=str(final), run_id=run_id,
                                   summary={"metrics": run.metrics, **summary})
                    _publish(final, tmp, ref, upstream_content)
                    runs.log_parquet_inputs(cfg, run_id, sorted(final.glob("*.parquet")),
                                                key, "output")
                except BaseException:
                    runs.end_run(cfg, run_id, "FAILED")
                    raise
                runs.end_run(cfg, run_id)
                return ref

        run_stage.__name__ = run_stage.__qualname__ = body.__name__
        run_stage.__module__, run_stage.__doc__ = body.__module__, body.__doc__
        return task(run_stage, name=stage, task_run_name=stage,
                    cache_policy=StagePolicy(stage=stage), persist_result=True)
    return decorate


def completed(cfg: PipelineConfig, stage: str, key: str) -> StageRef | None:
    """The StageRef recorded in a complete output folder whose files match its marker, or
    None."""
    marker, problems = verified(cfg, stage, key)
    return StageRef.model_validate(marker) if marker and not problems else None


def content(cfg: PipelineConfig, stage: str, key: str) -> str | None:
    """The content digest of a stage's complete output folder, if there is one."""
    marker = read_marker(stage_dir(cfg, stage, key))
    return marker.get("content") if marker else None
