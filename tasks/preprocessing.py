"""Stage 1: raw data -> validated, normalised, tokenised samples per split + vocab + quality."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect import task

from mmcore.config import DataConfig, PipelineConfig
from tasks import tracking
from tasks.stage import StagePolicy, StageRef, child_run, publish, stage_output

STAGE = "preprocessing"


def _files(path: str | None) -> list[list]:
    if path is None:
        return []
    root = Path(path)
    if root.is_file():  # a manifest: its images live in its folder
        root = root.parent
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths if p.exists()]


def key_extra(cfg: PipelineConfig) -> dict[str, Any]:
    """Fingerprint of the raw input (file sizes and mtimes, or the version of the package that
    ships it), so new data invalidates the cache. Reads no data."""
    data: DataConfig = cfg.data
    sides = [data.pair.images, data.pair.texts] if data.pair else [data]
    return {
        "files": [_files(side.path) for side in sides],
        "sklearn": version("scikit-learn") if any(s.source == "digits" for s in sides) else None,
    }


@task(name=STAGE, cache_policy=StagePolicy(stage=STAGE), persist_result=True)
def preprocessing_task(cfg: PipelineConfig, upstream: dict[str, StageRef], key: str,
                       parent_run_id: str) -> StageRef:
    with stage_output(cfg, STAGE, key, upstream) as out, \
            child_run(cfg, parent_run_id, STAGE, key) as run_id:
        from mmcore.data.registry import open_source  # heavy imports only when the stage runs
        from mmcore.stages.preprocessing import run_preprocessing

        source = open_source(cfg.data, cfg.seed)
        quality = run_preprocessing(source, cfg.data, cfg.seed, out.tmp, out.file_meta)
        metrics = {"rows_in": quality["rows_in"], "rows_kept": quality["rows_kept"],
                   "rows_rejected": quality["rows_rejected"]}
        metrics |= {f"rejected.{r}": n for r, n in quality["rejected"].items()}
        metrics |= {f"modified.{r}": n for r, n in quality["modified"].items()}
        metrics |= {f"rows.{s}": n for s, n in quality["splits"].items()}
        tracking.log_metrics(cfg, run_id, metrics)
        tracking.log_artifacts(cfg, run_id, [out.tmp / "quality.json"])
        out.summary = {"metrics": metrics, "modalities": list(source.info.modalities),
                       "class_names": source.info.class_names}
        return publish(cfg, out, run_id)

