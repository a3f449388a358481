"""Stage 3: project every modality into one shared space with an alignment loss."""

from __future__ import annotations

from tasks.stage import StageRun, stage_task

STAGE = "fusion"


@stage_task(STAGE, reads={"feature_extraction": "input"})
def fusion_task(run: StageRun) -> dict:
    from mmcore.stages.shared_space import run_fusion  # torch: only on a miss

    features = run.summary("feature_extraction")
    result = run_fusion(run.path("feature_extraction"), features["modalities"],
                        len(features["class_names"]), run.cfg.fusion, run.cfg.seed, run.out,
                        run.file_meta, on_epoch=run.epochs, device=run.cfg.device)
    run.log_metrics({f"final.{k}": v for k, v in result["metrics"].items()})
    return {"modalities": features["modalities"], "class_names": features["class_names"],
            "shared_dim": result["shared_dim"]}
