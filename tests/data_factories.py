"""Small data sets in real on-disk formats (IDX, aclImdb, CSV/Parquet manifests, PNG), seeded.

Shared by tests that need a source to read; every writer returns what it wrote, to compare with.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array as an IDX file (magic 0x08nn, big-endian dims, then the bytes)."""
    header = np.array([0x0800 | array.ndim, *array.shape], dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_bytes(path: Path, data: bytes, gz: bool = False) -> Path:
    """Write `data` to `path` (gzipped to `path.gz` when gz); returns the written path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def write_idx_mnist(folder: Path, n_train: int, n_test: int, gz: bool = False, size: int = 28,
                    seed: int = 0, n_classes: int = 10, width: int | None = None,
                    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Four MNIST-format files; returns split -> (images uint8 (n, H, W), labels uint8).

    Labels cycle through all classes (then shuffled), so every class is present once n >= k.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, size, width or size), dtype=np.uint8)
        labels = rng.permutation(np.arange(n) % n_classes).astype(np.uint8)
        write_bytes(Path(folder) / IDX_NAMES[split][0], idx_bytes(images), gz)
        write_bytes(Path(folder) / IDX_NAMES[split][1], idx_bytes(labels), gz)
        out[split] = (images, labels)
    return out


def write_imdb(folder: Path, reviews: dict[str, bytes | str] | None = None,
               per_class: int = 2, seed: int = 0) -> Path:
    """An `aclImdb` tree under `folder`; returns the aclImdb path.

    `reviews` maps "train/pos/12_9.txt"-style relative paths to contents; without it,
    `per_class` seeded reviews are written into each of train|test x pos|neg.
    """
    root = Path(folder) / "aclImdb"
    for split in ("train", "test"):
        for cls in ("pos", "neg"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
    if reviews is None:
        rng = np.random.default_rng(seed)
        reviews = {}
        for split in ("train", "test"):
            for cls, stars in (("pos", (7, 11)), ("neg", (1, 5))):
                for i in range(per_class):
                    word = "great" if cls == "pos" else "awful"
                    reviews[f"{split}/{cls}/{i}_{rng.integers(*stars)}.txt"] = (
                        f"A {word} film, number {i}.<br /><br />Watched in {split}.")
    for relative, content in reviews.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (root / relative).write_bytes(data)
    return root


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """Save uint8 pixels, (H, W) grey or (H, W, 3) RGB, in the format the suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)
    return path


def random_pixels(seed: int, size: int = 6, rgb: bool = False) -> np.ndarray:
    shape = (size, size, 3) if rgb else (size, size)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_manifest(folder: Path, rows: list[dict], fmt: str = "csv",
                   name: str = "manifest") -> Path:
    """Write `rows` (dicts of column -> value) as `<name>.csv` or `<name>.parquet`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if fmt == "csv":
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        path = folder / f"{name}.parquet"
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"fmt must be csv or parquet, not {fmt!r}")
    return path


def write_image_manifest(folder: Path, n: int, fmt: str = "csv", rgb: bool = False,
                         size: int = 6, classes: tuple[str, ...] = ("cat", "dog"),
                         with_text: bool = True, seed: int = 0) -> tuple[Path, list[dict]]:
    """A manifest of n PNG images in `folder/img/` labelled by name; returns (path, rows)."""
    rows = []
    for i in range(n):
        label = classes[i % len(classes)]
        write_image(Path(folder) / "img" / f"{i}.png", random_pixels(seed + i, size, rgb))
        row = {"id": f"m{i}", "label": label, "image_path": f"img/{i}.png"}
        if with_text:
            row["text"] = f"a photo of a {label}"
        rows.append(row)
    return write_manifest(folder, rows, fmt), rows
