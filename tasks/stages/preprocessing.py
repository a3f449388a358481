"""Stage 1: raw data -> validated, normalised, tokenised samples per split + vocab + quality."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from mmcore.config import DataConfig, PipelineConfig
from tasks.engine.skeleton import StageRun, stage_task

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


@stage_task(STAGE)
def preprocessing_task(run: StageRun) -> dict:
    from mmcore.data.sources import open_source  # heavy imports only when the stage runs
    from mmcore.stages.preprocessing import run_preprocessing

    source = open_source(run.cfg.data, run.cfg.seed)
    quality = run_preprocessing(source, run.cfg.data, run.cfg.seed, run.out, run.file_meta)
    metrics = {"rows_in": quality["rows_in"], "rows_kept": quality["rows_kept"],
               "rows_rejected": quality["rows_rejected"]}
    metrics |= {f"rejected.{r}": n for r, n in quality["rejected"].items()}
    metrics |= {f"modified.{r}": n for r, n in quality["modified"].items()}
    metrics |= {f"rows.{s}": n for s, n in quality["splits"].items()}
    run.log_metrics(metrics)
    run.log_artifacts("quality.json")
    return {"modalities": list(source.info.modalities), "class_names": source.info.class_names}
