"""Stage 2: one encoder per modality (CNN for images, GRU for text) -> embeddings per modality.

Embedding maps over partitions of the samples (whole row groups, about `data.batch_rows` rows
each): one part file per partition, inline or on Dask (`tasks/parallel/partitions.py`).

Which encoders learn with labels depends on the learning mode's space (`mmcore.learning_plan`),
so the key carries it: unimodal A and cross-modal A -> B share one output, multimodal another.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mmcore.config import PipelineConfig, digest
from mmcore.learning_plan import JOINT, space_of
from tasks.engine.keys import batch_cache, stage_dir, stage_key
from tasks.engine.outputs import completed
from tasks.engine.skeleton import StageRun, stage_task
from tasks.tracking import runs

STAGE = "feature_extraction"


def key_extra(cfg: PipelineConfig) -> dict[str, Any]:
    """The space the encoders are for: which of them see labels."""
    return {"space": space_of(cfg.training)}


def _joint_output(run: StageRun) -> Path | None:
    """This stage's complete output for the joint space (same samples, config, seed), whose
    labelled encoders an anchored space can take instead of training them again."""
    upstream = {k: v.key for k, v in run.upstream.items()}
    key = stage_key(STAGE, run.cfg, upstream, {"space": JOINT})
    return stage_dir(run.cfg, STAGE, key) if completed(run.cfg, STAGE, key) else None


def _rows(samples: Path) -> int:
    """Rows of the samples files (from their footers): what the embedding parts cover."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(samples / f"{split}.parquet").metadata.num_rows
               for split in ("train", "val", "test"))


def _frozen_encoders(run: StageRun, space: str) -> Path | None:
    """Batched data: the per-batch cache's folder for the encoders fitted on this reference
    window (the reference batches' content, this config and space), which stay frozen while
    batches arrive; None otherwise."""
    from mmcore.io.parquet import read_metadata

    meta = read_metadata(run.path("preprocessing") / "train.parquet")
    if "batch_keys" not in meta:
        return None
    key = digest({"reference": [meta["batch_keys"][b] for b in meta["reference_batches"]],
                  "features": run.cfg.section(STAGE), "space": space})
    return batch_cache(run.cfg, STAGE) / "encoders" / key


def _keep_encoders(run: StageRun, folder: Path) -> None:
    """The encoders this run used, into their cache folder (built once, atomically)."""
    from mmcore.io.parquet import cached_folder

    def copy(tmp: Path) -> None:
        for weights in sorted(run.out.glob("encoder_*.pt")):
            shutil.copyfile(weights, tmp / weights.name)

    cached_folder(folder, copy)


@stage_task(STAGE, reads={"preprocessing": "input"})
def feature_extraction_task(run: StageRun) -> dict:
    from mmcore.stages.feature_extraction import run_feature_extraction  # torch: only on a miss

    space = space_of(run.cfg.training)
    frozen = _frozen_encoders(run, space)
    reuse = frozen if frozen is not None else _joint_output(run) if space != JOINT else None
    result = run_feature_extraction(
        run.path("preprocessing"), run.cfg.features, run.cfg.seed, run.out, run.file_meta,
        lambda m, epoch, record: run.epochs(epoch, record, f"{m}."), device=run.cfg.device,
        space=space, reuse=reuse, on_progress=run.progress,
        map_parts=run.map_parts(_rows(run.path("preprocessing"))),
        part_rows=run.cfg.data.batch_rows,
        batch_cache=batch_cache(run.cfg, STAGE) if frozen is not None else None)
    if frozen is not None:
        _keep_encoders(run, frozen)
    # "encoder_probe.": each labelled encoder's own linear head, per split -- a diagnostic of the
    # encoder, not a learning mode's result (those are the testing stage's).
    run.log_metrics({f"{runs.SUMMARY}encoder_probe.{m}.{name}": v
                     for m, scores in result["scores"].items() for name, v in scores.items()})
    run.set_tags({"space": space, "labels_used": "+".join(result["labels_used"]),
                  "encoders.reused_from": str(reuse or "")})
    return {"modalities": result["modalities"], "class_names": result["class_names"],
            "space": space, "encoders": result["encoders"],
            "labels_used": result["labels_used"]}
