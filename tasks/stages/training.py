"""Stage 4: a classifier on the shared embeddings for one learning mode; the whole inference chain
logged to MLflow as a pyfunc model from code (the pipeline registers it:
`tasks.tracking.model_registry`)."""

from __future__ import annotations

import functools

import numpy as np

from mmcore.config import PipelineConfig
from mmcore.data.sources import open_source
from tasks.engine.keys import code_digests
from tasks.engine.skeleton import StageRun, stage_task
from tasks.tracking import runs

STAGE = "training"
# The code the logged model runs wherever it is loaded. Named in a string, so this stage's key
# covers that file and the mmcore modules it reaches (tasks/engine/fingerprint.py): an edit to the
# serving code trains and registers a new model version.
MODEL_CODE = "tasks.tracking.model_code"


@stage_task(STAGE, reads={"shared_space": "training"})
def training_task(run: StageRun) -> dict:
    from mmcore.finetune import finetune_chain  # torch and mlflow.pyfunc: only on a miss
    from mmcore.inference import InferenceChain
    from mmcore.stages.corruption_augment import add_evidence, corrupted_copies
    from mmcore.stages.robustness_curves import val_robustness
    from mmcore.stages.training import run_training
    from tasks.tracking.logged_model import content_digest, log_chain

    cfg, space = run.cfg, run.summary("shared_space")
    batches, window = _window(run)
    n_classes = len(space["class_names"])
    augment = functools.partial(corrupted_copies, run.path("preprocessing"),
                                run.path("feature_extraction"), run.path("shared_space"),
                                cfg.features.model_dump(mode="json"), n_classes)
    finetune = functools.partial(finetune_chain, run.path("preprocessing"),
                                 run.path("feature_extraction"), run.path("shared_space"),
                                 cfg.features.model_dump(mode="json"), cfg.training, cfg.device,
                                 run.out, cfg.seed)
    result = run_training(run.path("shared_space"), space["modalities"], n_classes,
                          cfg.training, cfg.seed, run.out, on_epoch=run.epochs,
                          device=cfg.device, window=window, batches=batches, augment=augment,
                          finetune=finetune,
                          evidence=functools.partial(add_evidence, run.path("preprocessing")))
    chain = InferenceChain.from_stage_dirs(run.path("preprocessing"),
                                           run.path("feature_extraction"), run.path("shared_space"),
                                           run.out, cfg.features.model_dump(mode="json"))
    if result["plan"]["mode"] == "multimodal":  # the robust objectives of `mmpipe tune`
        result["val"] |= val_robustness(chain, run.path("preprocessing"), run.path("shared_space"),
                                        result["plan"], run.cfg.seed)
    code = code_digests(cfg, MODEL_CODE)
    model_uri = log_chain(chain, run.run_id, _example(cfg, chain),
                          runs.tracking_uri(cfg.run_dir), MODEL_CODE, code)
    run.log_metrics({**{f"{runs.SUMMARY}{k}": v for k, v in result["val"].items()},
                     **{f"{runs.SUMMARY}fusion_weight.{m}": w
                        for m, w in result["fusion_weights"].items()}})
    plan = result["plan"]
    run.set_tags({"mode": plan["mode"], "model.uri": model_uri,
                  "labels_used": "+".join(plan["labels_used"]), "space": plan["space"],
                  **({"mmpipe.training_batches": ",".join(batches)} if batches else {})})
    return {"plan": plan, "labels_used": plan["labels_used"], "val": result["val"],
            "epochs_run": len(result["history"]), "modalities": space["modalities"],
            "class_names": space["class_names"], "model_uri": model_uri,
            "training_batches": batches, "finetuned": cfg.training.finetune,
            "content_digest": content_digest(chain, code)}


def _window(run: StageRun) -> tuple[list[str] | None, set[str] | None]:
    """Batched data: the batches `training.window` covers and the ids of their rows (from the
    preprocessing files' `batch` column); (None, None) otherwise."""
    import pyarrow.parquet as pq

    from mmcore.io.parquet import read_metadata

    samples = run.path("preprocessing")
    all_batches = read_metadata(samples / "train.parquet").get("batches")
    if not all_batches:
        return None, None
    batches = run.cfg.training.window_batches(all_batches)
    if batches == all_batches:
        return batches, None
    ids: set[str] = set()
    for split in ("train", "val"):
        table = pq.read_table(samples / f"{split}.parquet", columns=["id", "batch"],
                              filters=[("batch", "in", batches)])
        ids.update(table.column("id").to_pylist())
    return batches, ids


def _example(cfg: PipelineConfig, chain):
    """Three raw rows from the source (pixels on its own scale, text) as the input example."""
    batch = next(open_source(cfg.data, cfg.seed).batches(3))
    images = None
    if chain.spec["image_shape"] is not None:
        pixel_max = chain.spec["pixel_max"]
        images = [np.asarray(v, np.float32) * pixel_max for v in batch.column("image").to_pylist()]
    texts = batch.column("text").to_pylist()
    from tasks.tracking.logged_model import example_input

    return example_input(chain, images, texts)
