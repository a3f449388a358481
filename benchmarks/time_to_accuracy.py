"""The pipeline against plain references, side by side in one run: time-to-accuracy ratios.

Image (`--mnist DIR`, four MNIST IDX files; see real_mnist.py for the real MNIST):
  - reference: `plain_image.py --arch reference` (conv32-conv64-pool-fc128, AdamW, one-cycle,
    batch 128), a fresh process; its time to the target test accuracy (0.99) is load +
    training seconds up to the first epoch at the target;
  - plain pipeline encoder: `plain_image.py --arch pipeline` (same encoder, no framework);
  - pipeline: `mmpipe run` with the default config, image only, a fresh process against a
    local Prefect server started beforehand (timed apart); its wall time, start to exit;
  - ratio = pipeline wall time / reference time to the target (target: <= 1.5), and the
    pipeline's own test accuracy (target >= 0.99);
  - inference: embedding every split as feature extraction does (`embed_splits`: Parquet in,
    Parquet out) against a bare `torch.no_grad()` loop over the same rows held in memory, with
    the pipeline's trained encoder (target: >= 0.9x the bare loop's rows/s).
Text (`--reviews DIR [DIR ...]`, aclImdb-layout folders, e.g. movie_reviews.py's snippets and
reviews; `--max-tokens` and `--text-lr` take one value for all or one per folder):
  - TF-IDF + logistic regression (`tfidf_baseline.py`);
  - plain text reference: `plain_text.py` with the pipeline's text encoder;
  - pipeline: `mmpipe run --config configs/imdb.yaml` on the folder (text only), wall time and
    test accuracy;
  - targets (issue 19), per folder: pipeline >= TF-IDF + 1 point, and pipeline no more than 0.5
    points below the plain loop's best epoch.

Everything runs one after the other, --repeats times, interleaved, so the machine's noise hits
each alike; the medians and the per-repeat ratios are printed and written to --json, and last a
table of every target beside its figure (medians over repeats).

Usage: python benchmarks/time_to_accuracy.py [--mnist DIR] [--reviews DIR [DIR ...]]
           [--repeats 1] [--ref-epochs 3] [--text-encoder bag] [--text-epochs 6]
           [--max-tokens 400 [N ...]] [--text-lr 0.003 [LR ...]] [--set key=value ...]
           [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
TEXT_CONFIG = "configs/imdb.yaml"  # the defaults for review-like data
sys.path.insert(0, str(HERE))


def _python(script: str, *args: str) -> dict:
    """Run a sibling benchmark script in a fresh process; return what it wrote to --json."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, str(HERE / script), *args, "--json", out.name]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        return json.loads(Path(out.name).read_text())


def _mmpipe(overrides: list[str], run_dir: Path, config: str | None = None) -> dict:
    """`mmpipe run` in a fresh process: wall seconds, test accuracy, stage times."""
    from real_mnist import read_back

    mmpipe = str(Path(sys.executable).with_name("mmpipe"))
    given = ["--config", config] if config else []
    cmd = [mmpipe, "run", *given, *[a for o in overrides for a in ("--set", o)]]
    print("$ mmpipe run", *given, " ".join(f"--set {o}" for o in overrides), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (run_dir / "mmpipe.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"mmpipe run failed (exit {proc.returncode}); output in {run_dir}/mmpipe.log")
    for line in (proc.stdout + proc.stderr).splitlines():
        if re.search(r"epoch \d+/\d+", line):
            print("   ", line.strip()[-110:], flush=True)
    result = read_back(run_dir, proc.stdout + proc.stderr)
    stages = {s: round(v["seconds"], 1) for s, v in result["stages"].items()}
    fe = result["stages"].get("feature_extraction", {}).get("metrics", {})
    out = {"wall_s": round(wall, 1), "test_acc": result["parent"].get("test.accuracy"),
           "encoder_test_acc": {k: v for k, v in fe.items() if k.endswith("test_acc")},
           "stages": stages}
    print(f"  pipeline: {out['wall_s']} s, test accuracy {out['test_acc']}, stages {stages}",
          flush=True)
    return out


def _server(run_dir: Path, action: str) -> float:
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("mmpipe")), "server", action, "--set",
                    f"run_dir={run_dir}"], cwd=ROOT, capture_output=True, check=False)
    return round(time.perf_counter() - start, 1)


def inference_ratio(run_dir: Path) -> dict:
    """embed_splits (Parquet in and out) vs a bare no_grad loop, same encoder and rows."""
    import pyarrow.parquet as pq
    import torch

    from mmcore.config import FeaturesConfig
    from mmcore.io.parquet import read_metadata
    from mmcore.modalities.encoder_classifier import EncoderClassifier
    from mmcore.stages.feature_extraction import EMBED_ROWS, embed_splits
    from mmcore.training.batches import sample_decoder

    samples = max((run_dir / "stages" / "preprocessing").glob("*/train.parquet"),
                  key=lambda p: p.stat().st_mtime).parent
    features = max((run_dir / "stages" / "feature_extraction").glob("*/encoder_image.pt"),
                   key=lambda p: p.stat().st_mtime).parent
    meta = read_metadata(samples / "train.parquet")
    model = EncoderClassifier("image", FeaturesConfig(), meta, len(meta["class_names"]))
    model.load_state_dict(torch.load(features / "encoder_image.pt", weights_only=True))
    model.eval()
    decode = sample_decoder("image", meta)
    images = torch.cat([decode(pq.read_table(samples / f"{s}.parquet"))["image"]
                        for s in ("train", "val", "test")])
    rows = len(images)
    timings: dict[str, list[float]] = {"bare": [], "embed_splits": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            start = time.perf_counter()
            with torch.no_grad():
                for i in range(0, rows, EMBED_ROWS):
                    model.embed({"image": images[i:i + EMBED_ROWS]}).numpy()
            timings["bare"].append(time.perf_counter() - start)
            start = time.perf_counter()
            embed_splits(model, samples, Path(tmp) / "image.parquet", meta, {})
            timings["embed_splits"].append(time.perf_counter() - start)
    bare, piped = (statistics.median(timings[k]) for k in ("bare", "embed_splits"))
    out = {"rows": rows, "bare_rows_per_s": round(rows / bare), "embed_splits_rows_per_s":
           round(rows / piped), "ratio": round(bare / piped, 3),
           "seconds": {k: [round(v, 2) for v in vs] for k, vs in timings.items()}}
    print(f"  inference: embed_splits {out['embed_splits_rows_per_s']} rows/s, bare loop "
          f"{out['bare_rows_per_s']} rows/s, ratio {out['ratio']} (target >= 0.9)", flush=True)
    return out


def image_round(data: Path, work: Path, args: argparse.Namespace, repeat: int) -> dict:
    run_dir = work / f"image-{repeat}"
    run_dir.mkdir(parents=True, exist_ok=True)
    server_s = _server(run_dir, "start")
    try:
        ref = _python("plain_image.py", "--data", str(data), "--arch", "reference",
                      "--epochs", str(args.ref_epochs), "--target", str(args.image_target))
        plain = _python("plain_image.py", "--data", str(data), "--arch", "pipeline",
                        "--epochs", str(args.ref_epochs), "--target", str(args.image_target))
        pipe = _mmpipe(["data.source=mnist", f"data.path={data}", "data.text=none",
                        "name=time-to-accuracy-image", f"run_dir={run_dir}",
                        "training.mode=unimodal", "training.modality=image", *args.extra],
                       run_dir)
        inference = inference_ratio(run_dir)
    finally:
        _server(run_dir, "stop")
    ref_t = ref["time_to_target"]
    ratio = round(pipe["wall_s"] / ref_t, 3) if ref_t else None
    print(f"  image ratio: pipeline {pipe['wall_s']} s / reference to {args.image_target} "
          f"{ref_t} s = {ratio} (target <= 1.5)", flush=True)
    return {"server_start_s": server_s, "reference": ref, "plain_pipeline_encoder": plain,
            "pipeline": pipe, "inference": inference, "ratio": ratio}


def corpus_name(data: Path) -> str:
    """A text folder's name in the tables: `reviews` for .../reviews/aclImdb or .../reviews."""
    return data.parent.name if data.name == "aclImdb" else data.name


def text_round(data: Path, work: Path, args: argparse.Namespace, repeat: int, max_tokens: int,
               lr: float) -> dict:
    run_dir = work / f"text-{corpus_name(data)}-{repeat}"
    run_dir.mkdir(parents=True, exist_ok=True)
    server_s = _server(run_dir, "start")
    try:
        tfidf = _python("tfidf_baseline.py", "--data", str(data))
        target = tfidf["test_acc"]
        plain = _python("plain_text.py", "--data", str(data), "--encoder", args.text_encoder,
                        "--epochs", str(args.text_epochs), "--max-tokens",
                        str(max_tokens), "--lr", str(lr), "--target", str(target))
        pipe = _mmpipe([f"data.path={data}", "name=time-to-accuracy-text",
                        f"run_dir={run_dir}", f"data.max_text_tokens={max_tokens}",
                        f"features.text_encoder={args.text_encoder}",
                        f"features.lr={lr}", *args.extra], run_dir, TEXT_CONFIG)
    finally:
        _server(run_dir, "stop")
    plain_t = plain["time_to_target"]
    ratio = round(pipe["wall_s"] / plain_t, 3) if plain_t else None
    print(f"  text: TF-IDF {target}, plain {args.text_encoder} best {plain['best_test_acc']}, "
          f"pipeline {pipe['test_acc']}; pipeline {pipe['wall_s']} s / plain to TF-IDF's "
          f"accuracy {plain_t} s = {ratio}", flush=True)
    return {"server_start_s": server_s, "tfidf": tfidf, "plain_text": plain, "pipeline": pipe,
            "ratio": ratio}


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def summary(rounds: dict[str, list[dict]]) -> dict:
    out = {}
    if rounds.get("image"):
        r = rounds["image"]
        out["image"] = {
            "ratio_pipeline_over_reference": _median([x["ratio"] for x in r]),
            "pipeline_test_acc": _median([x["pipeline"]["test_acc"] for x in r]),
            "pipeline_wall_s": _median([x["pipeline"]["wall_s"] for x in r]),
            "reference_time_to_target_s": _median([x["reference"]["time_to_target"] for x in r]),
            "reference_final_acc": _median([x["reference"]["final_test_acc"] for x in r]),
            "plain_encoder_time_to_target_s": _median(
                [x["plain_pipeline_encoder"]["time_to_target"] for x in r]),
            "inference_ratio": _median([x["inference"]["ratio"] for x in r])}
    for corpus, r in rounds.get("text", {}).items():
        out[f"text {corpus}"] = {
            "tfidf_test_acc": _median([x["tfidf"]["test_acc"] for x in r]),
            "pipeline_test_acc": _median([x["pipeline"]["test_acc"] for x in r]),
            "plain_text_best_acc": _median([x["plain_text"]["best_test_acc"] for x in r]),
            "pipeline_wall_s": _median([x["pipeline"]["wall_s"] for x in r]),
            "ratio_pipeline_over_plain": _median([x["ratio"] for x in r])}
    return out


def target(name: str, figure: float | None, goal: float, at_least: bool = True) -> dict:
    """One target beside its figure: met when the figure is >= goal (or <= with at_least
    False); None (not met) when there is no figure."""
    met = figure is not None and (figure >= goal if at_least else figure <= goal)
    return {"target": f"{name} {'>=' if at_least else '<='} {goal:.4f}", "figure": figure,
            "met": met}


def print_targets(rows: list[dict]) -> None:
    """The targets table: target, figure, met or not."""
    if not rows:
        return
    print("\n== targets")
    width = max(len(r["target"]) for r in rows)
    for r in rows:
        figure = "-" if r["figure"] is None else f"{r['figure']:.4f}"
        print(f"  {r['target']:<{width}}  {figure:>8}  {'met' if r['met'] else 'NOT MET'}")


def text_targets(summary: dict) -> list[dict]:
    """Issue 19, per text folder: the pipeline >= TF-IDF + 1 point, and no more than 0.5 points
    below its own plain loop's best epoch."""
    rows = []
    for key, s in summary.items():
        if not key.startswith("text ") or s["pipeline_test_acc"] is None:
            continue
        pipe = s["pipeline_test_acc"]
        rows.append(target(f"{key}: pipeline accuracy (TF-IDF {s['tfidf_test_acc']:.4f} + 0.01)",
                           pipe, s["tfidf_test_acc"] + 0.01))
        rows.append(target(f"{key}: pipeline - plain loop's best ({s['plain_text_best_acc']:.4f})",
                           round(pipe - s["plain_text_best_acc"], 4), -0.005))
    return rows


def _per_folder(values: list, folders: list[Path], name: str) -> list:
    """A per-folder option: one value for every folder, or one each."""
    if len(values) not in (1, len(folders)):
        sys.exit(f"{name}: give one value, or one per --reviews folder ({len(folders)})")
    return values * len(folders) if len(values) == 1 else values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", type=Path, help="folder of the four MNIST IDX files")
    parser.add_argument("--reviews", type=Path, nargs="+", default=[],
                        help="aclImdb-layout folders (or their parents)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--ref-epochs", type=int, default=3)
    parser.add_argument("--image-target", type=float, default=0.99)
    parser.add_argument("--text-encoder", default="bag", choices=["gru", "cnn", "bag", "nbbag"])
    parser.add_argument("--text-epochs", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[400],
                        help="one for all --reviews folders, or one each")
    parser.add_argument("--text-lr", type=float, nargs="+", default=[0.003],
                        help="plain text and pipeline; one for all folders, or one each")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "time-to-accuracy")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        metavar="KEY=VALUE", help="more config overrides for mmpipe run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.mnist and not args.reviews:
        parser.error("give --mnist DIR and/or --reviews DIR")
    work = args.work.resolve()
    texts = list(zip([d.resolve() for d in args.reviews],
                     _per_folder(args.max_tokens, args.reviews, "--max-tokens"),
                     _per_folder(args.text_lr, args.reviews, "--text-lr"), strict=True))
    rounds: dict = {"image": [], "text": {corpus_name(d): [] for d, _, _ in texts}}
    for repeat in range(args.repeats):
        if args.mnist:
            print(f"== image, repeat {repeat + 1}/{args.repeats}", flush=True)
            rounds["image"].append(image_round(args.mnist.resolve(), work, args, repeat))
        for data, max_tokens, lr in texts:
            print(f"== text {corpus_name(data)}, repeat {repeat + 1}/{args.repeats}", flush=True)
            rounds["text"][corpus_name(data)].append(
                text_round(data, work, args, repeat, max_tokens, lr))
    result = {"summary": summary(rounds), "rounds": rounds, "argv": sys.argv[1:]}
    print("\n== summary (medians over repeats)")
    print(json.dumps(result["summary"], indent=1))
    result["targets"] = text_targets(result["summary"])
    print_targets(result["targets"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
