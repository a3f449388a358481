"""Stage 3: project every modality into one shared space with an alignment loss."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mmcore.config import PipelineConfig
from tasks import tracking
from tasks.stage import StagePolicy, StageRef, child_run, publish, stage_output

STAGE = "fusion"


@task(name=STAGE, cache_policy=StagePolicy(stage=STAGE), persist_result=True)
def fusion_task(cfg: PipelineConfig, upstream: dict[str, StageRef], key: str,
                parent_run_id: str) -> StageRef:
    from mmcore.stages.fusion import run_fusion  # torch: only on a miss

    features = upstream["feature_extraction"]
    modalities = features.summary["modalities"]
    with stage_output(cfg, STAGE, key, upstream) as out, \
            child_run(cfg, parent_run_id, STAGE, key) as run_id:
        tracking.log_parquet_inputs(cfg, run_id, sorted(Path(features.path).glob("*.parquet")),
                                    features.key, "input")
        epochs = tracking.EpochLogger(cfg, run_id)
        result = run_fusion(Path(features.path), modalities, len(features.summary["class_names"]),
                            cfg.fusion, cfg.seed, out.tmp, out.file_meta, on_epoch=epochs,
                            device=cfg.device)
        epochs.flush()
        metrics = {f"final.{k}": v for k, v in result["metrics"].items()}
        tracking.log_metrics(cfg, run_id, metrics)
        out.summary = {"metrics": metrics, "modalities": modalities,
                       "class_names": features.summary["class_names"],
                       "shared_dim": result["shared_dim"]}
        return publish(cfg, out, run_id)

