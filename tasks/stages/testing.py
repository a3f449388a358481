"""Stage 5: evaluate on the held-out test split -> predictions (Parquet), metrics, plots, and
robustness curves: accuracy with each test modality corrupted at levels 0, 0.1, ..., 1 (MLflow
metric `robustness.<modality>.<corruption>`, step = level x 10), their areas (MultiBench's
relative robustness) and a plot. Every result says which labels it used (`labels_used`).
Predictions map over parts of `data.batch_rows` test rows (`tasks/parallel/partitions.py`)."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from mmcore.learning_plan import mode_label
from tasks.engine.skeleton import StageRun, stage_task
from tasks.tracking import runs

STAGE = "testing"


def result_row(plan: dict, metrics: dict[str, float], fusion: str) -> pd.DataFrame:
    """This model's result: one name per measure (mode, modalities, labels used)."""
    return pd.DataFrame([{
        "model": mode_label(plan["mode"], plan["train"], plan["test"],
                            fusion if plan["mode"] == "multimodal" else None),
        "mode": plan["mode"], "labels_used": "+".join(plan["labels_used"]),
        "test_accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}])


@stage_task(STAGE, reads={"shared_space": "testing"})
def testing_task(run: StageRun) -> dict:
    from mmcore.inference import InferenceChain  # torch: only on a miss
    from mmcore.io.parquet import read_dataset
    from mmcore.metrics import per_class_table
    from mmcore.stages.testing import run_testing

    cfg, space = run.cfg, run.summary("shared_space")
    # fine-tuned encoders (training.finetune) re-embedded the rows into the training folder
    shared_dir = run.path("training" if run.summary("training").get("finetuned")
                          else "shared_space")
    chain = None
    if cfg.testing.robustness:
        chain = InferenceChain.from_stage_dirs(
            run.path("preprocessing"), run.path("feature_extraction"), run.path("shared_space"),
            run.path("training"), cfg.features.model_dump(mode="json"))
    shared_rows = pq.ParquetFile(
        shared_dir / f"shared_{space['modalities'][0]}.parquet").metadata.num_rows
    result = run_testing(shared_dir, run.path("training"), space["modalities"],
                         space["class_names"], run.out, run.file_meta, chain=chain,
                         samples_dir=run.path("preprocessing"), seed=cfg.seed,
                         part_rows=cfg.data.batch_rows, map_parts=run.map_parts(shared_rows),
                         robustness_rows=cfg.testing.robustness_rows)
    plan = result["plan"]
    run.log_metrics({f"test.{k}": v for k, v in result["metrics"].items()})
    table = result_row(plan, result["metrics"], cfg.training.fusion)
    table.to_csv(run.out / "comparison.csv", index=False)
    run.log_artifacts("confusion.png", "comparison.csv")
    # As tables too: MLflow's evaluation view shows them beside other runs' tables.
    client = runs.client_for(run.cfg)
    client.log_table(run.run_id, table, "comparison.json")
    predictions = read_dataset(run.out / "predictions.parquet", columns=["label", "pred"])
    client.log_table(run.run_id, per_class_table(predictions.column("label").to_numpy(),
                                                 predictions.column("pred").to_numpy(),
                                                 space["class_names"]), "per_class.json")
    robustness = result.get("robustness")
    if robustness:
        # Curves over corruption levels, not epochs: step = level index (level x 10).
        runs.log_series(run.cfg, run.run_id, robustness["series"])
        # The rows the curves used: a share of a large test split (`testing.robustness_rows`).
        run.log_metrics({**robustness["relative"],
                         f"{runs.SUMMARY}robustness_rows": robustness["rows"]})
        run.log_artifacts("robustness.png")
    run.set_tags({"mode": plan["mode"], "labels_used": "+".join(plan["labels_used"]),
                  "train_modalities": "+".join(plan["train"]),
                  "test_modalities": "+".join(plan["test"])})
    return {"plan": plan, "labels_used": plan["labels_used"],
            "comparison": table.to_dict(orient="records"),
            "robustness": robustness["series"] if robustness else {},
            "robustness_rows": robustness["rows"] if robustness else None}
