"""Stage 5: evaluate on the held-out test split -> predictions (Parquet), metrics, plots, and a
comparison table beside the unimodal baselines (each encoder alone)."""

from __future__ import annotations

import pandas as pd

from tasks import tracking
from tasks.stage import StageRun, stage_task

STAGE = "testing"


def comparison(features: dict, plan: dict, metrics: dict[str, float]) -> pd.DataFrame:
    """This model beside each encoder alone (the unimodal baselines), on the test split."""
    rows = [{"model": f"{m} encoder alone", "mode": "unimodal", "test_accuracy":
             features["metrics"][f"final.{m}.test_acc"]}
            for m in features["modalities"]]
    rows.append({"model": f"{plan['mode']} ({'+'.join(plan['train'])} -> "
                          f"{'+'.join(plan['test'])})",
                 "mode": plan["mode"], "test_accuracy": metrics["accuracy"]})
    return pd.DataFrame(rows)


@stage_task(STAGE, reads={"fusion": "testing"})
def testing_task(run: StageRun) -> dict:
    from mmcore.metrics import per_class_table
    from mmcore.stages.testing import run_testing  # torch: only on a miss

    fusion = run.summary("fusion")
    result = run_testing(run.path("fusion"), run.path("training"), fusion["modalities"],
                         fusion["class_names"], run.out, run.file_meta)
    run.log_metrics({f"test.{k}": v for k, v in result["metrics"].items()})
    table = comparison(run.summary("feature_extraction"), result["plan"], result["metrics"])
    table.to_csv(run.out / "comparison.csv", index=False)
    run.log_artifacts("confusion.png", "comparison.csv")
    # As tables too: MLflow's evaluation view shows them beside other runs' tables.
    client = tracking.client_for(run.cfg)
    client.log_table(run.run_id, table, "comparison.json")
    predictions = pd.read_parquet(run.out / "predictions.parquet", columns=["label", "pred"])
    client.log_table(run.run_id, per_class_table(predictions["label"].to_numpy(),
                                                 predictions["pred"].to_numpy(),
                                                 fusion["class_names"]), "per_class.json")
    return {"plan": result["plan"], "comparison": table.to_dict(orient="records")}
