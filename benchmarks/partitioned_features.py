"""Partitioned feature extraction at MNIST size: wall time of the embedding (inference) part
inline (on 1 and 2 threads of the flow's process), and as one Prefect task per part on a Dask
LocalCluster of 1 and of 2 workers.

What runs is the pipeline's own code: `tasks.partitions.mapper` (what `StageRun.map_parts`
returns) mapping `mmcore.stages.feature_extraction.embed_part` over the samples' partitions
(whole row groups, about `data.batch_rows` = 8,192 rows each), inside a Prefect flow on a
temporary Prefect server (`prefect_test_harness`). The samples are the real MNIST (70,000
images) when `--mnist DIR` holds its four IDX files (`benchmarks/real_mnist.py --convert-only`
writes them), else 70,000 generated MNIST-format images (`benchmarks/memory.py`'s generator:
the same shape and size, so the same inference cost). The encoder is the default image CNN,
seeded and untrained: embedding costs the same whatever the weights.

Reported per setting: median wall time of the whole map (parts computed, written, moved into
place) over --repeats, the LocalCluster's start (spawning workers that import torch) measured
on its own, and the ratios. Each part runs torch on one thread (`mmcore.partitions.one_thread`),
so the parts are the same bytes wherever they run; the script checks that they are.

Usage: python benchmarks/partitioned_features.py [--mnist DIR] [--work DIR] [--repeats 1]
           [--settings inline-1 inline-2 dask-1 dask-2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

SETTINGS = ["inline-1", "inline-2", "dask-1", "dask-2"]


def prepare(work: Path, mnist: Path | None) -> tuple[Path, Path, int, str]:
    """Samples (preprocessed MNIST) and a seeded encoder's weights; reused when present."""
    import pyarrow.parquet as pq
    import torch

    from mmcore.config import load_config
    from mmcore.data.sources import open_source
    from mmcore.io.parquet import read_metadata
    from mmcore.modalities.encoder_classifier import EncoderClassifier
    from mmcore.stages.preprocessing import run_preprocessing

    if mnist is None:
        from memory import generate

        mnist, _ = generate(work / "generated-mnist", 70_000, 0, False)
        data = "generated MNIST-format (70,000 images)"
    else:
        data = f"real MNIST from {mnist}"
    cfg = load_config(overrides=["data.source=mnist", f"data.path={mnist}", "data.text=none"])
    samples = work / "samples"
    if not (samples / "test.parquet").exists():
        shutil.rmtree(samples, ignore_errors=True)
        samples.mkdir(parents=True)
        run_preprocessing(open_source(cfg.data, cfg.seed), cfg.data, cfg.seed, samples, {})
    meta = read_metadata(samples / "train.parquet")
    torch.manual_seed(0)
    model = EncoderClassifier("image", cfg.features, meta, len(meta["class_names"]))
    weights = work / "encoder_image.pt"
    torch.save(model.state_dict(), weights)
    rows = sum(pq.ParquetFile(samples / f"{s}.parquet").metadata.num_rows
               for s in ("train", "val", "test"))
    return samples, weights, rows, data


def cluster_start(workers: int) -> float:
    """Seconds to start a LocalCluster of `workers` and connect (then stop it)."""
    from tasks.parallel.dask_cluster import dask_task_runner

    start = time.perf_counter()
    with dask_task_runner(workers=workers) as runner:
        runner.client.wait_for_workers(workers)
        seconds = time.perf_counter() - start
    return seconds


def measure(work: Path, samples: Path, weights: Path, rows: int, repeats: int,
            settings: list[tuple[str, int]]) -> dict:
    from prefect import flow

    from mmcore.config import load_config
    from mmcore.io.integrity import manifest
    from mmcore.io.parquet import read_metadata
    from mmcore.stages.feature_extraction import embed_jobs, embed_part
    from tasks.parallel.partitions import mapper

    meta = read_metadata(samples / "train.parquet")

    @flow(name="partitioned-features-benchmark")
    def run_all() -> dict:
        """Settings interleaved within each repeat, so a change in the machine's load hits
        them all alike."""
        results: dict = {}
        for _ in range(repeats):
            for mode, workers in settings:
                name = f"{mode}-{workers}"
                cfg = load_config(overrides=[f"run_dir={work}", f"dask.partitions={mode}",
                                             f"dask.workers={workers}"])
                jobs = embed_jobs(samples, weights, "image", cfg.features, meta, {}, True,
                                  cfg.data.batch_rows)
                final, out = work / "stages" / name / "key", work / "out" / name
                shutil.rmtree(work / "stages" / name, ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                start = time.perf_counter()
                dataset = mapper(cfg, "feature_extraction", final, out, rows, {})(
                    "image.parquet", embed_part, jobs, "bench")
                seconds = time.perf_counter() - start
                entry = results.setdefault(name, {"times_s": [], "parts": len(jobs)})
                entry["times_s"].append(round(seconds, 1))
                entry["digests"] = {k: v["sha256"] for k, v in manifest(dataset).items()}
        for entry in results.values():
            entry["median_s"] = statistics.median(entry["times_s"])
        return results

    return run_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, help="folder with the four MNIST IDX files")
    parser.add_argument("--work", type=Path, help="keep samples and outputs here")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS)
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    settings = [(name.split("-")[0], int(name.split("-")[1])) for name in args.settings]

    from prefect.testing.utilities import prefect_test_harness

    work = args.work or Path(tempfile.mkdtemp(prefix="partitioned-features-"))
    work.mkdir(parents=True, exist_ok=True)
    samples, weights, rows, data = prepare(work, args.mnist)
    starts = {n: cluster_start(n) for mode, n in settings if mode == "dask"}
    with prefect_test_harness(server_startup_timeout=180):
        results = measure(work, samples, weights, rows, args.repeats, settings)
    same = len({json.dumps(r["digests"], sort_keys=True) for r in results.values()}) == 1
    first = next(iter(results.values()))
    print(f"data: {data}; {rows:,} rows; {first['parts']} parts; repeats: {args.repeats}")
    print(f"{'setting':<10} {'median s':>9} {'runs s':>18} {'vs dask-1':>10}  cluster start")
    base = results.get("dask-1", first)["median_s"]
    for name, r in results.items():
        mode, workers = name.split("-")
        start = f"{starts[int(workers)]:.1f} s" if mode == "dask" else "(threads)"
        print(f"{name:<10} {r['median_s']:>9.1f} {str(r['times_s']):>18} "
              f"{base / r['median_s']:>9.2f}x  {start}")
    print(f"parts bit for bit the same in every setting: {same}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
