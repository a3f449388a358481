"""The skeleton every stage task shares, written once: output folder, MLflow child run, inputs
and outputs logged, the result published.

A stage module holds only what is its own: a body `(run: StageRun) -> summary` that reads its
inputs, calls `mmcore`, and logs its metrics and artifacts. `stage_task` wraps it into the
Prefect task and does the rest:

- its upstream folders are checked against their markers (`tasks/engine/outputs.py`);
- the body writes into a temporary folder, published with its marker when the body succeeds;
- the stage's MLflow child run (FAILED if the body raises), its upstream Parquet files logged as
  dataset inputs and its own as outputs, per-epoch metrics flushed at the end;
- a body that maps over partitions of its input (`run.map_parts`, `tasks/parallel/partitions.py`)
  computes the parts in the key's work folder, which outlives a failed attempt so that the next
  one reuses the parts already done;
- the task returns a `StageRef` (path + key + the MLflow run that produced it + a small summary),
  which Prefect persists as JSON (`tasks/engine/results.py`); never a DataFrame. Its cache key
  comes from `tasks/engine/keys.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from mmcore.config import PipelineConfig
from mmcore.io.partitions import MapParts
from tasks import faults
from tasks.engine import results
from tasks.engine.keys import StagePolicy, StageRef, stage_dir
from tasks.engine.outputs import check_inputs, output_folder, publish
from tasks.parallel import partitions
from tasks.tracking import runs


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
        """How this attempt computes a partitioned dataset (`tasks/parallel/partitions.py`): parts
        kept
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
        """Per trained part (an encoder, a side of the shared space, the classifier): train and
        val curves overlaid in one PNG, and its `summary/<part.>best_epoch` as a metric (counted
        from 1, as the curves' steps). A part without train or val curves gets no plot."""
        from mmcore.metrics import best_epoch, curve_names, plot_learning_curves

        for part, history in _parts(self.epochs.history).items():
            if not curve_names(history):
                continue
            best = best_epoch(history)
            if best is not None:
                self.log_metrics({f"{runs.SUMMARY}{part}best_epoch": best})
            name = f"curves_{part.rstrip('.') or self.stage}.png"
            title = " · ".join([self.stage, *([part.rstrip(".")] if part else []),
                                "learning curves"])
            plot_learning_curves(history, self.out / name, title)
            self.log_artifacts(name)


def _parts(history: dict[str, list[dict[str, float]]]) -> dict[str, list[dict[str, float]]]:
    """The epoch records per trained part (`image.`, or `` for the stage's one model): a
    prefix's records, split again by a `<part>.` in their keys (the anchored space logs both of
    its sides, `image.val_acc` and `text.val_pair_loss`, under one prefix)."""
    parts: dict[str, list[dict[str, float]]] = {}
    for prefix, records in history.items():
        for record in records:
            split: dict[str, dict[str, float]] = {}
            for key, value in record.items():
                head, dot, name = key.rpartition(".")
                split.setdefault(prefix + head + dot, {})[name] = value
            for part, values in split.items():
                parts.setdefault(part, []).append(values)
    return parts


class _Epochs(runs.EpochLogger):
    """The stage's per-epoch metrics, with a fault-injection point per epoch."""

    def __init__(self, cfg: PipelineConfig, run_id: str, stage: str):
        super().__init__(cfg, run_id)
        self.stage = stage

    def __call__(self, epoch: int, record: dict[str, float], prefix: str | None = None) -> None:
        faults.point(self.stage, "epoch")
        super().__call__(epoch, record, prefix)


Body = Callable[[StageRun], dict[str, Any]]


def stage_task(stage: str, reads: dict[str, str] | None = None):
    """Make `body(run) -> summary` the stage's Prefect task.

    `reads` maps the upstream stages whose Parquet files the body reads to the MLflow dataset
    context they are logged under ("input", "training", "testing").
    """
    def decorate(body: Body):
        def run_stage(cfg: PipelineConfig, upstream: dict[str, StageRef], key: str,
                      parent_run_id: str) -> StageRef:
            upstream_content = check_inputs(stage, upstream)
            with output_folder(cfg, stage, key) as (final, tmp):
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
                    publish(final, tmp, ref, upstream_content)
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
                    cache_policy=StagePolicy(stage=stage), persist_result=True,
                    result_serializer=results.SERIALIZER)
    return decorate
