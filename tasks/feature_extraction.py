"""Stage 2: one encoder per modality (CNN for images, GRU for text) -> embeddings per modality."""

from __future__ import annotations

from tasks.stage import StageRun, stage_task

STAGE = "feature_extraction"


@stage_task(STAGE, reads={"preprocessing": "input"})
def feature_extraction_task(run: StageRun) -> dict:
    from mmcore.stages.feature_extraction import run_feature_extraction  # torch: only on a miss

    result = run_feature_extraction(
        run.path("preprocessing"), run.cfg.features, run.cfg.seed, run.out, run.file_meta,
        lambda m, epoch, record: run.epochs(epoch, record, f"{m}."), device=run.cfg.device,
        on_progress=run.progress)
    # "final.": the chosen encoder's accuracy per split, apart from the per-epoch series.
    run.log_metrics({f"final.{m}.{name}": v for m, scores in result["scores"].items()
                     for name, v in scores.items()})
    return {"modalities": result["modalities"], "class_names": result["class_names"]}
