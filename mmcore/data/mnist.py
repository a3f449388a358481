"""MNIST-format IDX files (MNIST, Fashion-MNIST, any H x W greyscale set) read from a local folder.

The folder holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`
and `t10k-labels-idx1-ubyte`, each plain or gzipped (the plain file wins when both exist).
Every header, count and file length is checked in the constructor, so a bad file fails before
any row is read; a `.gz` file is decompressed once there, chunk by chunk, to measure it and to
catch a corrupt stream. Rows then stream: plain files through `numpy.memmap`, gzipped ones
through sequential reads of one batch of bytes at a time, so memory stays bounded by a batch.

Rows: id `train-00000` / `test-00000`, split `train` (train files) or `test` (t10k files),
pixels byte/255 as float32, origin `<images file>:<record index, 0-based>`. Class names are
"0".."k-1" with k = largest label + 1 over both label files.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from mmcore.config import DataConfig
from mmcore.data.source import DataError, SourceInfo, raw_batch

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # 0x0803: ubyte, 3 dims; 0x0801: ubyte, 1 dim
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
GZIP_CHUNK = 1 << 20  # bytes decompressed at a time while measuring a .gz file


@dataclass(frozen=True)
class IdxFile:
    """One checked IDX file: where it is, how many records, and the shape of one record."""

    path: Path
    count: int
    record_shape: tuple[int, ...]  # () for labels, (H, W) for images

    @property
    def header_bytes(self) -> int:
        return 4 + 4 * (1 + len(self.record_shape))

    @property
    def record_bytes(self) -> int:
        return int(np.prod(self.record_shape, dtype=np.int64))

    @property
    def gz(self) -> bool:
        return self.path.suffix == ".gz"


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any read or decompression failure into a DataError naming the file."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read: {exc}", file=path, reason="unreadable_file") from exc


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    """Read n bytes (fewer only at end of file); gzip reads may return short chunks."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing {name} (or {name}.gz) in {folder}", file=folder / name,
                    reason="missing_file")


def _data_length(path: Path) -> int:
    """Bytes in the file once decompressed (streams a .gz file through, checking its CRC)."""
    if path.suffix != ".gz":
        return os.path.getsize(path)
    total = 0
    with _reading(path), gzip.open(path, "rb") as stream:
        while chunk := stream.read(GZIP_CHUNK):
            total += len(chunk)
    return total


def read_idx_header(path: Path, magic: int) -> IdxFile:
    """Check magic number, dimensions and file length of one IDX file; DataError if wrong."""
    ndim = magic & 0xFF
    with _reading(path), _open(path) as stream:
        head = _read_exact(stream, 4 * (1 + ndim))
    found = int.from_bytes(head[:4], "big") if len(head) >= 4 else None
    if found is not None and found != magic:
        raise DataError(f"bad magic number {found}, expected {magic}", file=path,
                        reason="bad_magic")
    if len(head) < 4 * (1 + ndim):
        raise DataError(f"truncated: {len(head)} bytes, shorter than an IDX header",
                        file=path, reason="truncated_file")
    dims = [int(v) for v in np.frombuffer(head[4:], dtype=">u4")]
    if any(d == 0 for d in dims[1:]):
        raise DataError(f"bad dimensions {dims}", file=path, reason="bad_dimensions")
    idx = IdxFile(path, dims[0], tuple(dims[1:]))
    expected = idx.header_bytes + idx.count * idx.record_bytes
    actual = _data_length(path)
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise DataError(f"{what}: header implies {expected} bytes, found {actual}", file=path,
                        reason="truncated_file" if actual < expected else "bad_length")
    return idx


def _read_labels(idx: IdxFile) -> np.ndarray:
    with _reading(idx.path), _open(idx.path) as stream:
        stream.read(idx.header_bytes)
        raw = _read_exact(stream, idx.count)
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)


def _image_chunks(idx: IdxFile, rows: int) -> Iterator[np.ndarray]:
    """uint8 (n, H*W) arrays of at most `rows` records, read lazily."""
    width = idx.record_bytes
    if not idx.gz:
        pixels = np.memmap(idx.path, dtype=np.uint8, mode="r", offset=idx.header_bytes,
                           shape=(idx.count, width))
        for start in range(0, idx.count, rows):
            yield pixels[start:start + rows]
        return
    with _reading(idx.path), gzip.open(idx.path, "rb") as stream:
        stream.read(idx.header_bytes)
        for start in range(0, idx.count, rows):
            n = min(rows, idx.count - start)
            raw = _read_exact(stream, n * width)
            if len(raw) != n * width:
                raise DataError("file shrank while reading", file=idx.path,
                                reason="truncated_file")
            yield np.frombuffer(raw, dtype=np.uint8).reshape(n, width)


def _image_column(chunk: np.ndarray) -> pa.ListArray:
    """(n, H*W) uint8 -> list<float32> column of pixels in [0, 1], one batch at a time."""
    n, width = chunk.shape
    values = pa.array((chunk.astype(np.float32) / 255.0).reshape(-1))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, values)


class MnistSource:
    """Image-only source over the four MNIST-format IDX files in `cfg.path`."""

    def __init__(self, cfg: DataConfig, seed: int):
        folder = Path(cfg.path)
        if not folder.is_dir():
            raise DataError("not a folder", file=folder, reason="missing_folder")
        self.splits: dict[str, tuple[IdxFile, np.ndarray]] = {}
        files: list[Path] = []
        for split, (images_name, labels_name) in SPLIT_FILES.items():
            images = read_idx_header(_find(folder, images_name), IMAGES_MAGIC)
            labels = read_idx_header(_find(folder, labels_name), LABELS_MAGIC)
            if images.count != labels.count:
                raise DataError(f"{images.count} images in {images.path} but {labels.count} "
                                f"labels in {labels.path}", file=images.path,
                                reason="count_mismatch")
            self.splits[split] = (images, _read_labels(labels))
            files += [images.path, labels.path]
        shapes = {images.record_shape for images, _ in self.splits.values()}
        if len(shapes) > 1:
            raise DataError(f"train and test images differ in size: {sorted(shapes)}",
                            file=folder, reason="bad_dimensions")
        all_labels = [labels for _, labels in self.splits.values() if len(labels)]
        if not all_labels:
            raise DataError("no rows in any IDX file", file=folder, reason="empty_dataset")
        n_classes = int(max(labels.max() for labels in all_labels)) + 1
        h, w = shapes.pop()
        self.info = SourceInfo(
            name="mnist", class_names=[str(c) for c in range(n_classes)],
            image_shape=(1, h, w), has_text=False, files=files,
            extra={"pixel_max": "255", "format": "idx"},
        )

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Train rows, then test rows; no batch mixes the two."""
        for split, (images, labels) in self.splits.items():
            start = 0
            for chunk in _image_chunks(images, batch_rows):
                stop = start + len(chunk)
                rows = range(start, stop)
                yield raw_batch({
                    "id": [f"{split}-{i:05d}" for i in rows],
                    "label": labels[start:stop],
                    "split": [split] * len(chunk),
                    "image": _image_column(chunk),
                    "origin": [f"{images.path}:{i}" for i in rows],
                })
                start = stop
