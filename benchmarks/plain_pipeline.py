"""The same compute as the default pipeline, as a plain script: no Prefect, no MLflow, no cache.

The baseline that `pipeline_overhead.py` measures the orchestration against. It calls the same
mmcore stage functions (so the work is identical, Parquet files included) in one straight line.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def run_plain(out: Path, overrides: list[str] | None = None) -> dict:
    from mmcore.config import load_config
    from mmcore.data.sources import open_source
    from mmcore.stages.feature_extraction import run_feature_extraction
    from mmcore.stages.shared_space import run_shared_space
    from mmcore.stages.testing import run_testing
    from mmcore.stages.training import run_training

    cfg = load_config(overrides=overrides)
    dirs = {name: out / name for name in ("samples", "features", "shared", "model", "test")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    from mmcore.stages.preprocessing import run_preprocessing

    run_preprocessing(open_source(cfg.data, cfg.seed), cfg.data, cfg.seed, dirs["samples"], {})
    feats = run_feature_extraction(dirs["samples"], cfg.features, cfg.seed, dirs["features"], {})
    n_classes = len(feats["class_names"])
    run_shared_space(dirs["features"], feats["modalities"], n_classes, cfg.shared_space, cfg.seed,
               dirs["shared"], {})
    run_training(dirs["shared"], feats["modalities"], n_classes, cfg.training, cfg.seed,
                 dirs["model"])
    metrics = run_testing(dirs["shared"], dirs["model"], feats["modalities"],
                          feats["class_names"], dirs["test"], {})["metrics"]
    return {**metrics, **{f"{m}_test_acc": s["test_acc"] for m, s in feats["scores"].items()}}


if __name__ == "__main__":
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = run_plain(Path(tmp), sys.argv[1:])
    print(f"plain pipeline: {time.perf_counter() - start:.2f} s, {metrics}")
