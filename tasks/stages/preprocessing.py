"""Stage 1: raw data -> validated, normalised, tokenised samples per split + vocab + quality."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

from mmcore.config import DataConfig, PipelineConfig
from mmcore.io.integrity import file_stats
from tasks.engine.keys import StageRef, batch_cache
from tasks.engine.skeleton import StageRun, stage_task
from tasks.tracking import runs

STAGE = "preprocessing"


def _files(path: str | None) -> list[list]:
    if path is None:
        return []
    root = Path(path)
    if root.is_file():  # a manifest: its images live in its folder
        root = root.parent
    return [list(stat) for stat in file_stats(root)]


def key_extra(cfg: PipelineConfig) -> dict[str, Any]:
    """Fingerprint of the raw input (file sizes and mtimes, or the version of the package that
    ships it), so new data invalidates the cache. Reads no data."""
    data: DataConfig = cfg.data
    sides = [data.pair.images, data.pair.texts] if data.pair else [data]
    return {
        "files": [_files(side.path) for side in sides],
        "sklearn": version("scikit-learn") if any(s.source == "digits" for s in sides) else None,
    }


def check_batches(cfg: PipelineConfig, accept_changes: bool) -> None:
    """Before a run: a batch ingested before that changed is an error naming it, unless
    `accept_changes` (`--refresh preprocessing`)."""
    if cfg.data.batched and not accept_changes:
        from mmcore.data.batches import check_unchanged, ledger_path, list_batches, read_ledger

        check_unchanged(list_batches(cfg.data.path),
                        read_ledger(ledger_path(cfg.run_dir, cfg.data.path)))


def record_batches(cfg: PipelineConfig, ref: StageRef, state: str,
                   parent_run_id: str) -> dict[str, Any] | None:
    """After preprocessing of batched data: its batches are seen (the ledger), and the pipeline's
    parent run says which were new in this run (none when preprocessing was a cache hit).
    Returns {all, new, reference} batch names; None for unbatched data."""
    if not cfg.data.batched:
        return None
    from mmcore.data.batches import ledger_path, write_ledger

    names = dict(ref.summary["batches"])
    write_ledger(ledger_path(cfg.run_dir, cfg.data.path), names.pop("digests"))
    if state != "miss":
        names["new"] = []
    runs.set_tags(cfg, parent_run_id, {"mmpipe.batches": ",".join(names["all"]),
                                       "mmpipe.new_batches": ",".join(names["new"])})
    return names


def _batched(run: StageRun) -> dict:
    """Preprocessing of batched data: per-batch outputs from the batch cache, the rest new."""
    from mmcore.data.batches import ledger_path, read_ledger
    from mmcore.stages.batched_preprocessing import run_batched_preprocessing

    cfg = run.cfg
    quality = run_batched_preprocessing(
        cfg.data, cfg.seed, run.out, run.file_meta, batch_cache(cfg, STAGE),
        read_ledger(ledger_path(cfg.run_dir, cfg.data.path)))
    oov = [batch["oov_rate"] for batch in quality["per_batch"].values()]  # in batch order
    if None not in oov:  # step = the batch's index: a chart over the nights
        runs.log_series(cfg, run.run_id, {"batch.oov_rate": oov}, prefix="")
    names = quality["batches"]
    run.set_tags({"mmpipe.batches": ",".join(names["all"]),
                  "mmpipe.new_batches": ",".join(names["new"]),
                  "mmpipe.reference_batches": ",".join(names["reference"]),
                  "batches.computed": ",".join(quality.pop("computed"))})
    return quality


@stage_task(STAGE)
def preprocessing_task(run: StageRun) -> dict:
    from mmcore.data.sources import open_source  # heavy imports only when the stage runs
    from mmcore.stages.preprocessing import run_preprocessing

    if run.cfg.data.batched:
        from mmcore.io.parquet import read_metadata

        quality = _batched(run)
        batches = quality["batches"]
        meta = read_metadata(run.out / "train.parquet")
        info = {"modalities": meta["modalities"], "class_names": meta["class_names"]}
    else:
        source = open_source(run.cfg.data, run.cfg.seed)
        quality = run_preprocessing(source, run.cfg.data, run.cfg.seed, run.out, run.file_meta)
        batches = None
        info = {"modalities": list(source.info.modalities),
                "class_names": source.info.class_names}
    metrics = {"rows_in": quality["rows_in"], "rows_kept": quality["rows_kept"],
               "rows_rejected": quality["rows_rejected"]}
    metrics |= {f"rejected.{r}": n for r, n in quality["rejected"].items()}
    metrics |= {f"modified.{r}": n for r, n in quality["modified"].items()}
    metrics |= {f"rows.{s}": n for s, n in quality["splits"].items()}
    run.log_metrics(metrics)
    run.log_artifacts("quality.json")
    return {**info, "batches": batches}
