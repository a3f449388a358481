"""What logging the model costs: the time of `log_chain` (the training stage's model logging) and
the size of what it writes, on the stage outputs of a finished run.

    mmpipe run --set run_dir=/tmp/bench [--set ...]
    python benchmarks/model_logging.py /tmp/bench [--repeat 3] [--set ...]

Pass the same `--set` overrides as the run. Each repeat logs the model into a new run of a
scratch experiment in the run's MLflow store (its artifacts under a temporary folder, removed at
the end), then loads it back once and predicts the example (timed apart).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import mmcore  # noqa: F401  (before torch, as in the CLI)


def latest(run_dir: Path, stage: str) -> Path:
    """The stage's output folder that `latest.json` names (the last run's)."""
    key = json.loads((run_dir / "stages" / stage / "latest.json").read_text())["key"]
    return run_dir / "stages" / stage / key


def folder_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    import mlflow
    from mlflow import MlflowClient

    from mmcore.config import load_config
    from mmcore.inference import InferenceChain
    from tasks.engine.keys import code_digests
    from tasks.stages.training import MODEL_CODE, _example
    from tasks.tracking.logged_model import log_chain
    from tasks.tracking.runs import using_tracking_uri

    run_dir = args.run_dir.resolve()
    cfg = load_config(overrides=[*args.overrides, f"run_dir={run_dir}"])
    chain = InferenceChain.from_stage_dirs(
        latest(run_dir, "preprocessing"), latest(run_dir, "feature_extraction"),
        latest(run_dir, "shared_space"), latest(run_dir, "training"),
        cfg.features.model_dump(mode="json"))
    example = _example(cfg, chain)
    code = code_digests(cfg, MODEL_CODE)
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        experiment = client.create_experiment(f"model-logging-{time.time_ns()}",
                                              artifact_location=Path(tmp).as_uri())
        times, model_uri = [], ""
        for _ in range(args.repeat):
            run_id = client.create_run(experiment).info.run_id
            start = time.perf_counter()
            model_uri = log_chain(chain, run_id, example, uri, MODEL_CODE, code)
            times.append(time.perf_counter() - start)
            client.set_terminated(run_id)
        with using_tracking_uri(uri):
            local = Path(mlflow.artifacts.download_artifacts(model_uri))
            start = time.perf_counter()
            model = mlflow.pyfunc.load_model(model_uri)
            loaded = time.perf_counter() - start
            start = time.perf_counter()
            model.predict(example)
            predicted = time.perf_counter() - start
        size, count = folder_size(local)
        big = sorted(((p.stat().st_size, p.relative_to(local)) for p in local.rglob("*")
                      if p.is_file()), reverse=True)[:4]
        client.delete_experiment(experiment)
    print(f"log_chain: {', '.join(f'{t:.2f}' for t in times)} s "
          f"(median {statistics.median(times):.2f} s)")
    print(f"load_model: {loaded:.2f} s, predict {len(example)} rows: {predicted * 1000:.0f} ms")
    print(f"logged model: {size:,} bytes in {count} files; largest: "
          + ", ".join(f"{p} {s:,}" for s, p in big))


if __name__ == "__main__":
    main()
