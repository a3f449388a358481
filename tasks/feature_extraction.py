"""Stage 2: one encoder per modality (CNN for images, GRU for text) -> embeddings per modality."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mmcore.config import PipelineConfig
from tasks import tracking
from tasks.stage import StagePolicy, StageRef, child_run, publish, stage_output

STAGE = "feature_extraction"


@task(name=STAGE, cache_policy=StagePolicy(stage=STAGE), persist_result=True)
def feature_extraction_task(cfg: PipelineConfig, upstream: dict[str, StageRef], key: str,
                            parent_run_id: str) -> StageRef:
    from mmcore.stages.feature_extraction import run_feature_extraction  # torch: only on a miss

    samples = Path(upstream["preprocessing"].path)
    with stage_output(cfg, STAGE, key, upstream) as out, \
            child_run(cfg, parent_run_id, STAGE, key) as run_id:
        tracking.log_parquet_inputs(cfg, run_id, sorted(samples.glob("*.parquet")),
                                    upstream["preprocessing"].key, "input")

        epochs = tracking.EpochLogger(cfg, run_id)
        result = run_feature_extraction(samples, cfg.features, cfg.seed, out.tmp, out.file_meta,
                                        lambda m, epoch, record: epochs(epoch, record, f"{m}."),
                                        device=cfg.device)
        epochs.flush()
        # "final.": the chosen encoder's accuracy per split, apart from the per-epoch series.
        metrics = {f"final.{m}.{name}": v for m, scores in result["scores"].items()
                   for name, v in scores.items()}
        tracking.log_metrics(cfg, run_id, metrics)
        out.summary = {"metrics": metrics, "modalities": result["modalities"],
                       "class_names": result["class_names"]}
        return publish(cfg, out, run_id)

