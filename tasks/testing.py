"""Stage 5: evaluate on the held-out test split -> predictions (Parquet), metrics, plots, and a
comparison table beside the unimodal baselines (each encoder alone)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import task

from mmcore.config import PipelineConfig
from tasks import tracking
from tasks.stage import StagePolicy, StageRef, child_run, publish, stage_output

STAGE = "testing"


def comparison(features: StageRef, plan: dict, metrics: dict[str, float]) -> pd.DataFrame:
    """This model beside each encoder alone (the unimodal baselines), on the test split."""
    rows = [{"model": f"{m} encoder alone", "mode": "unimodal", "test_accuracy":
             features.summary["metrics"][f"final.{m}.test_acc"]}
            for m in features.summary["modalities"]]
    rows.append({"model": f"{plan['mode']} ({'+'.join(plan['train'])} -> "
                          f"{'+'.join(plan['test'])})",
                 "mode": plan["mode"], "test_accuracy": metrics["accuracy"]})
    return pd.DataFrame(rows)


@task(name=STAGE, cache_policy=StagePolicy(stage=STAGE), persist_result=True)
def testing_task(cfg: PipelineConfig, upstream: dict[str, StageRef], key: str,
                 parent_run_id: str) -> StageRef:
    from mmcore.stages.testing import run_testing  # torch: only on a miss

    fusion, training = upstream["fusion"], upstream["training"]
    with stage_output(cfg, STAGE, key, upstream) as out, \
            child_run(cfg, parent_run_id, STAGE, key) as run_id:
        tracking.log_parquet_inputs(cfg, run_id, sorted(Path(fusion.path).glob("*.parquet")),
                                    fusion.key, "testing")
        result = run_testing(Path(fusion.path), Path(training.path),
                             fusion.summary["modalities"], fusion.summary["class_names"],
                             out.tmp, out.file_meta)
        metrics = {f"test.{k}": v for k, v in result["metrics"].items()}
        table = comparison(upstream["feature_extraction"], result["plan"], result["metrics"])
        table.to_csv(out.tmp / "comparison.csv", index=False)
        tracking.log_metrics(cfg, run_id, metrics)
        tracking.log_artifacts(cfg, run_id, [out.tmp / "confusion.png",
                                             out.tmp / "shared_space.png",
                                             out.tmp / "comparison.csv"])
        out.summary = {"metrics": metrics, "plan": result["plan"],
                       "comparison": table.to_dict(orient="records")}
        return publish(cfg, out, run_id)

