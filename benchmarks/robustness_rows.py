"""What `testing.robustness_rows` saves: the robustness curves on a whole 10,000-row 28x28 test
split against the same curves on the default cap of 2,000 rows, timed in one process.

The model is trained quickly (1 encoder epoch on a few thousand train rows, unimodal image, as
the Fashion-MNIST run that spent 587 s of 1,462 s in testing): timing does not depend on how good
it is, and the curves' agreement is shown too (largest gap of a capped point to the full split's,
beside the 2,000-row standard error). The images are real ones from an MNIST-format IDX folder
(`--data`, e.g. the output of benchmarks/fashion_mnist.py): all of its test rows, the first
`--train` of its train rows.

Usage: OMP_NUM_THREADS=1 python benchmarks/robustness_rows.py --data DIR [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from mmcore.config import load_config
from mmcore.data.mnist import SPLIT_FILES
from mmcore.data.sources import open_source
from mmcore.inference import InferenceChain
from mmcore.learning_plan import space_of
from mmcore.stages.feature_extraction import run_feature_extraction
from mmcore.stages.preprocessing import run_preprocessing
from mmcore.stages.robustness_curves import ROBUSTNESS_ROWS, robustness_curves
from mmcore.stages.shared_space import run_shared_space
from mmcore.stages.training import run_training

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_image import read_idx  # noqa: E402  (sibling scripts)
from real_mnist import _write_atomic  # noqa: E402

QUICK = ["data.source=mnist", "data.text=none", "training.mode=unimodal",
         "training.modality=image", "features.image_epochs=1", "shared_space.epochs=1",
         "training.epochs=1"]


def fewer_train_rows(data: Path, folder: Path, train: int) -> Path:
    """`data`'s IDX files in `folder`, the train files cut to their first `train` rows."""
    for split, names in SPLIT_FILES.items():
        for name in names:
            array = read_idx(data, name)
            _write_atomic(folder / name, array[:train] if split == "train" else array)
    return folder


def trained_chain(data: Path, root: Path, seed: int):
    """The quick model's inference chain, its samples folder and the test labels by id."""
    cfg = load_config(overrides=[*QUICK, f"data.path={data}", f"seed={seed}"])
    space = space_of(cfg.training)
    dirs = {n: root / n for n in ("samples", "features", "shared", "model")}
    for d in dirs.values():
        d.mkdir()
    run_preprocessing(open_source(cfg.data, cfg.seed), cfg.data, cfg.seed, dirs["samples"], {})
    feats = run_feature_extraction(dirs["samples"], cfg.features, cfg.seed, dirs["features"], {},
                                   space=space)
    names, modalities = feats["class_names"], feats["modalities"]
    run_shared_space(dirs["features"], modalities, len(names), cfg.shared_space, cfg.seed,
                     dirs["shared"], {}, space=space)
    result = run_training(dirs["shared"], modalities, len(names), cfg.training, cfg.seed,
                          dirs["model"])
    chain = InferenceChain.from_stage_dirs(dirs["samples"], dirs["features"], dirs["shared"],
                                           dirs["model"], cfg.features.model_dump(mode="json"))
    test = pq.read_table(dirs["samples"] / "test.parquet", columns=["id", "label"]).to_pandas()
    return chain, dirs["samples"], result["plan"], test.set_index("id")["label"]


def timed(repeats: int, fn) -> tuple[float, pd.DataFrame]:
    """Median seconds of `repeats` calls, and the last call's result."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="MNIST-format IDX folder")
    parser.add_argument("--train", type=int, default=3000, help="train rows to keep")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "idx").mkdir()
        data = fewer_train_rows(args.data, root / "idx", args.train)
        chain, samples, plan, labels = trained_chain(data, root, args.seed)
        fallback = int(labels.mode()[0])

        def curves(max_rows):
            return robustness_curves(chain, samples, plan, labels, fallback, args.seed,
                                     max_rows=max_rows)

        full_s, full = timed(args.repeats, lambda: curves(None))
        capped_s, capped = timed(args.repeats, lambda: curves(ROBUSTNESS_ROWS))
    gap = (capped["accuracy"] - full["accuracy"]).abs()
    print(f"test rows {len(labels)}, curve points {len(full)}, repeats {args.repeats}")
    print(f"whole split      : median {full_s:7.2f} s ({int(full['rows'].iloc[0])} rows)")
    print(f"capped (default) : median {capped_s:7.2f} s ({int(capped['rows'].iloc[0])} rows)")
    print(f"ratio whole/capped: {full_s / capped_s:.2f}x")
    print(f"largest |capped - whole| accuracy over the points: {gap.max():.4f} "
          f"(mean {gap.mean():.4f}); 2,000-row standard error at 0.9: "
          f"{np.sqrt(0.9 * 0.1 / ROBUSTNESS_ROWS):.4f}")


if __name__ == "__main__":
    main()
