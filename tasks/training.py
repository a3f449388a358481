"""Stage 4: a classifier on the shared embeddings for one learning mode; the whole inference chain
logged to MLflow as a pyfunc model and registered, with the `newest` alias on this version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import task

from mmcore.config import PipelineConfig
from mmcore.data.registry import open_source
from tasks import tracking
from tasks.stage import StagePolicy, StageRef, child_run, publish, stage_output

STAGE = "training"
ALIAS = "newest"


@task(name=STAGE, cache_policy=StagePolicy(stage=STAGE), persist_result=True)
def training_task(cfg: PipelineConfig, upstream: dict[str, StageRef], key: str,
                  parent_run_id: str) -> StageRef:
    from mmcore.inference import InferenceChain  # torch and mlflow.pyfunc: only on a miss
    from mmcore.stages.training import run_training
    from tasks.pyfunc_model import log_chain

    fusion = upstream["fusion"]
    modalities = fusion.summary["modalities"]
    class_names = fusion.summary["class_names"]
    with stage_output(cfg, STAGE, key, upstream) as out, \
            child_run(cfg, parent_run_id, STAGE, key) as run_id:
        tracking.log_parquet_inputs(cfg, run_id, sorted(Path(fusion.path).glob("*.parquet")),
                                    fusion.key, "training")
        epochs = tracking.EpochLogger(cfg, run_id)
        result = run_training(Path(fusion.path), modalities, len(class_names), cfg.training,
                              cfg.seed, out.tmp, on_epoch=epochs, device=cfg.device)
        epochs.flush()
        plan = result["plan"]
        chain = InferenceChain.from_stage_dirs(
            Path(upstream["preprocessing"].path), Path(upstream["feature_extraction"].path),
            Path(fusion.path), out.tmp, cfg.features.model_dump(mode="json"))
        model_uri, version = log_chain(
            chain, run_id, _example(cfg, chain),
            cfg.training.model_name if cfg.training.register_model else None,
            tracking.tracking_uri(cfg.run_dir))
        if version is not None:
            tracking.client_for(cfg).set_registered_model_alias(cfg.training.model_name, ALIAS,
                                                                version)
        metrics = {"final.val_acc": result["val_acc"],
                   **{f"fusion_weight.{m}": w for m, w in result["fusion_weights"].items()}}
        tracking.log_metrics(cfg, run_id, metrics)
        tracking.set_tags(cfg, run_id, {"mode": plan["mode"], "model.uri": model_uri,
                                        "model.version": version or ""})
        out.summary = {"metrics": metrics, "plan": plan, "modalities": modalities,
                       "class_names": class_names, "model_uri": model_uri,
                       "model_version": version}
        return publish(cfg, out, run_id)


def _example(cfg: PipelineConfig, chain):
    """Three raw rows from the source (pixels on its own scale, text) as the input example."""
    batch = next(open_source(cfg.data, cfg.seed).batches(3))
    images = None
    if chain.spec["image_shape"] is not None:
        pixel_max = chain.spec["pixel_max"]
        images = [np.asarray(v, np.float32) * pixel_max for v in batch.column("image").to_pylist()]
    texts = batch.column("text").to_pylist()
    from tasks.pyfunc_model import example_input

    return example_input(chain, images, texts)

