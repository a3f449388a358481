"""Stage 3: project every modality into one shared space with an alignment loss: the joint space
(multimodal), or one anchored on the training modality (unimodal, cross-modal)."""

from __future__ import annotations

from typing import Any

from mmcore.config import PipelineConfig
from mmcore.learning_plan import space_of
from tasks.engine.skeleton import StageRun, stage_task
from tasks.tracking import runs

STAGE = "shared_space"


def key_extra(cfg: PipelineConfig) -> dict[str, Any]:
    return {"space": space_of(cfg.training)}


@stage_task(STAGE, reads={"feature_extraction": "input"})
def shared_space_task(run: StageRun) -> dict:
    from mmcore.stages.shared_space import run_shared_space  # torch: only on a miss

    features = run.summary("feature_extraction")
    space = space_of(run.cfg.training)
    result = run_shared_space(run.path("feature_extraction"), features["modalities"],
                        len(features["class_names"]), run.cfg.shared_space, run.cfg.seed, run.out,
                        run.file_meta, on_epoch=run.epochs, device=run.cfg.device, space=space)
    run.log_metrics({f"{runs.SUMMARY}{k}": v for k, v in result["metrics"].items()})
    run.set_tags({"space": space, "labels_used": "+".join(result["labels_used"])})
    _plot_shared_space(run, features["modalities"], features["class_names"],
                       result["labels_used"][0])
    return {"modalities": features["modalities"], "class_names": features["class_names"],
            "shared_dim": result["shared_dim"], "space": space,
            "labels_used": result["labels_used"]}


def _plot_shared_space(run: StageRun, modalities: list[str], class_names: list[str],
                       labelled: str) -> None:
    """The shared space this stage learned, on the validation split, as the run's plot; points
    coloured by the label of a modality that has them (a label-free one's file has none)."""
    from mmcore.io.parquet import read_embeddings
    from mmcore.metrics import plot_shared_space

    shared = {m: read_embeddings(run.out / f"shared_{m}.parquet") for m in modalities}
    val = shared[labelled]["split"] == "val"
    labels = shared[labelled]["label"][val].astype("int64")
    plot_shared_space({m: s["embedding"][val] for m, s in shared.items()}, labels,
                      run.out / "shared_space.png", class_names)
    run.log_artifacts("shared_space.png")
