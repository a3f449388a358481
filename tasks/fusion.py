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
    _plot_shared_space(run, features["modalities"], features["class_names"])
    return {"modalities": features["modalities"], "class_names": features["class_names"],
            "shared_dim": result["shared_dim"]}


def _plot_shared_space(run: StageRun, modalities: list[str], class_names: list[str]) -> None:
    """The shared space this stage learned, on the validation split, as the run's plot."""
    from mmcore.metrics import plot_shared_space
    from mmcore.parquet_io import read_embeddings

    shared = {m: read_embeddings(run.out / f"shared_{m}.parquet") for m in modalities}
    first = shared[modalities[0]]
    val = first["split"] == "val"
    plot_shared_space({m: s["embedding"][val] for m, s in shared.items()}, first["label"][val],
                      run.out / "shared_space.png", class_names)
    run.log_artifacts("shared_space.png")
