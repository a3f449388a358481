"""A night with one new batch against a full run from scratch: preprocessing + feature
extraction, through the pipeline flow (Prefect, MLflow, the stage cache), measured in one run.

The built-in digits are written as N batches (`mmpipe data batches`, 10% of the data each with
N=10). Per repeat:
- full: a new run folder (its MLflow store made beforehand, not timed), all N batches, both
  stages from nothing (encoders trained);
- night: a run folder that has ingested the first N-1 batches (not timed), then the N-th
  arrives and is ingested (timed): only it is preprocessed and embedded.
Prints each time, the medians and night / full (target <= 0.2).

Usage: python benchmarks/incremental_ingestion.py [--repeats 3] [--batches 10] [--copies 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

STAGES = ["preprocessing", "feature_extraction"]


def _run(data: Path, run_dir: Path) -> float:
    from flows.pipeline import pipeline
    from tasks.tracking import runs

    runs.create_store(str(run_dir))  # a new run folder's MLflow store (~10 s): not timed
    start = time.perf_counter()
    summary = pipeline(overrides=["data.source=manifest", "data.batched=true",
                                  f"data.path={data}", f"run_dir={run_dir}"], stages=STAGES)
    elapsed = time.perf_counter() - start
    assert all(s["state"] == "miss" for s in summary["stages"].values()), summary["stages"]
    return elapsed


def _data(stream: Path, folder: Path, count: int) -> Path:
    for batch in sorted(stream.iterdir())[:count]:
        if not (folder / batch.name).exists():
            shutil.copytree(batch, folder / batch.name)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--copies", type=int, default=1,
                        help="each digit this many times (`mmpipe data batches --copies`)")
    args = parser.parse_args()
    from prefect.testing.utilities import prefect_test_harness

    from flows.cli import environment
    from mmcore.data.digit_batches import write_digit_batches

    work = Path(tempfile.mkdtemp(prefix="incremental-"))
    stream = work / "stream"
    write_digit_batches(stream, args.batches, copies=args.copies)
    full, night = [], []
    with prefect_test_harness(server_startup_timeout=120), \
            environment.without_flow_heartbeats():
        for repeat in range(args.repeats):
            root = work / f"repeat-{repeat}"
            full.append(_run(_data(stream, root / "full-data", args.batches), root / "full"))
            data = _data(stream, root / "night-data", args.batches - 1)
            _run(data, root / "night")  # the nights before: not timed
            night.append(_run(_data(stream, data, args.batches), root / "night"))
            print(f"repeat {repeat + 1}: full {full[-1]:.2f} s, night {night[-1]:.2f} s",
                  flush=True)
    f, n = statistics.median(full), statistics.median(night)
    print(f"\n{args.batches} batches of the built-in digits x {args.copies}, stages "
          f"{', '.join(STAGES)}, {args.repeats} repeats")
    print(f"full run from scratch : median {f:.2f} s")
    print(f"night, 1 new batch    : median {n:.2f} s")
    print(f"night / full          : {n / f:.3f}  (target <= 0.2)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
