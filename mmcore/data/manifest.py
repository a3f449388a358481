"""A user manifest: CSV or Parquet with columns `id,label[,split],image_path,text`.

`image_path` or `text` may be absent (a single-modality manifest); `id` and `label` may not.
Labels are class names or class indices. With `data.classes` a name must be one of them and
an index must be below their count; without it, all-integer labels give classes "0".."max" and
any other labels give their sorted unique values. The label column is read once up front to fix
the class list; rows then stream in batches.

Images are read with Pillow (any format and mode it opens), converted to `data.image_mode`
("L": 1 channel, "RGB": 3) and, with `data.image_size`, resized (squashed) to that square;
without it the first readable image fixes the shape, and images of another size are passed on
unchanged for validation to reject as `wrong_image_size`. Pixels are float32 byte/255,
channel-first, flattened. Image paths are relative to the manifest's folder and must stay in it:
an absolute path, a `..` escape or a symlink pointing outside is `path_escapes_manifest_folder`;
a missing file is `missing_image_file`; a file Pillow cannot decode is `corrupt_image`.

Origin convention: `<manifest file>:<n>`, n = 1-based data row (the header is not counted; in
a CSV without multi-line fields that is the line number minus one), the same for CSV and Parquet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmcore.config import DataConfig
from mmcore.data.source import DataError, SourceInfo, raw_batch

REQUIRED = ("id", "label")
OPTIONAL = ("split", "image_path", "text")
PARQUET_SUFFIXES = (".parquet", ".pq")  # any other file is read as CSV
CHANNELS = {"L": 1, "RGB": 3}
SCAN_ROWS = 65536  # rows per chunk when reading the manifest up front
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageReadError(Exception):
    """An image a manifest row names but that cannot be used; `problem` is the reason code."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem


def read_manifest(path: Path, columns: list[str], rows: int) -> Iterator[pd.DataFrame]:
    """The manifest's `columns` in chunks of `rows`, each cell a str or None (see `cell`)."""
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns):
                yield _cells(batch.to_pandas())
        else:
            # No `usecols`: it would skip pandas' field-count check, and a row with a stray
            # comma would be cut silently. Undecodable bytes become U+FFFD, so each row can be
            # judged by `data.encoding_errors` instead of failing the whole file.
            for chunk in pd.read_csv(path, chunksize=rows, dtype=str, keep_default_na=False,
                                     na_filter=False, encoding_errors="replace"):
                yield _cells(chunk[columns])
    except (OSError, ValueError, pa.ArrowException) as exc:  # pandas ParserError is a ValueError
        raise DataError(f"cannot read manifest: {exc}", file=path,
                        reason="unreadable_manifest") from exc


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({name: [cell(v, verbatim=name == "text") for v in frame[name]]
                         for name in frame.columns}, dtype=object)


def cell(value: Any, verbatim: bool = False) -> str | None:
    """A cell as a string: None/NaN -> None; 3.0 -> "3"; unless verbatim, stripped and blank ->
    None (texts stay as written, so validation can tell an empty text from a missing one)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if verbatim:
        return str(value)
    return str(value).strip() or None


def _columns(path: Path) -> list[str]:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return list(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read Parquet schema: {exc}", file=path,
                            reason="unreadable_manifest") from exc
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read CSV header: {exc}", file=path,
                        reason="unreadable_manifest") from exc


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


def class_names_for(labels: set[str], declared: list[str] | None) -> list[str]:
    """Declared classes, else "0".."max" for integer labels, else sorted unique labels."""
    if declared is not None:
        return list(declared)
    if labels and all(_is_int(v) for v in labels):
        return [str(c) for c in range(max(int(v) for v in labels) + 1)]
    return sorted(labels)


def label_index(value: str | None, index: dict[str, int],
                ) -> tuple[int | None, str | None]:
    """(class index, problem) of one label cell: a class name, else an integer index."""
    if value is None:
        return None, None  # validation counts missing labels
    if value in index:
        return index[value], None
    if _is_int(value):
        return int(value), None  # validation checks the range
    return None, "unknown_class"


def resolve_image(root: Path, raw: str) -> Path:
    """The file `raw` names under `root` (already resolved); ImageReadError if outside/missing."""
    relative = Path(raw)
    if relative.is_absolute() or raw.startswith(("/", "\\")):
        raise ImageReadError("path_escapes_manifest_folder")
    try:
        resolved = (root / relative).resolve()  # follows symlinks, so a link can't escape
        is_file = resolved.is_file()
    except (OSError, ValueError):  # e.g. a NUL byte or an over-long name
        raise ImageReadError("missing_image_file") from None
    if not resolved.is_relative_to(root):
        raise ImageReadError("path_escapes_manifest_folder")
    if not is_file:
        raise ImageReadError("missing_image_file")
    return resolved


def load_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    """(C, H, W) float32 pixels in [0, 1]; ImageReadError("corrupt_image") if Pillow fails."""
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert(mode)
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32) / 255.0
    except PermissionError as exc:
        raise ImageReadError("unreadable_file") from exc
    except IMAGE_ERRORS as exc:
        raise ImageReadError("corrupt_image") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class ManifestSource:
    """Rows of a CSV/Parquet manifest, with images read from files under its folder."""

    def __init__(self, cfg: DataConfig, seed: int):
        self.path = Path(cfg.path)
        if not self.path.is_file():
            raise DataError("manifest file not found", file=self.path, reason="missing_file")
        self.root = self.path.parent.resolve()
        present = _columns(self.path)
        for name in REQUIRED:
            if name not in present:
                raise DataError(f"missing required column '{name}' (has {present})",
                                file=self.path, field=name, reason="missing_column")
        with_text = "text" in present and cfg.text == "source"
        self.columns = [c for c in (*REQUIRED, *OPTIONAL) if c in present]
        if not with_text and "text" in self.columns:
            self.columns.remove("text")
        if "image_path" not in self.columns and not with_text:
            raise DataError("no modality: needs an image_path column, or a text column with "
                            "data.text=source", file=self.path, reason="no_modality")
        self.mode, self.size = cfg.image_mode, cfg.image_size
        self.encoding_errors = cfg.encoding_errors
        class_names = class_names_for(self._label_values(), cfg.classes)
        self._index = {name: i for i, name in enumerate(class_names)}
        image_shape = self._image_shape() if "image_path" in self.columns else None
        self.info = SourceInfo(
            name="manifest", class_names=class_names, image_shape=image_shape,
            has_text=with_text, files=[self.path],
            extra={"pixel_max": "255", "image_mode": self.mode},
        )

    def _label_values(self) -> set[str]:
        """Every distinct label in the manifest; DataError if it has no rows."""
        values: set[str] = set()
        rows = 0
        for chunk in read_manifest(self.path, ["label"], SCAN_ROWS):
            values.update(v for v in chunk["label"] if v is not None)
            rows += len(chunk)
        if rows == 0:
            raise DataError("manifest has no rows", file=self.path, reason="empty_dataset")
        return values

    def _image_shape(self) -> tuple[int, int, int]:
        """(C, size, size) when resizing, else the shape of the first readable image."""
        if self.size is not None:
            return (CHANNELS[self.mode], self.size, self.size)
        for chunk in read_manifest(self.path, ["image_path"], SCAN_ROWS):
            for raw in chunk["image_path"]:
                try:
                    if raw is not None:
                        return load_image(resolve_image(self.root, raw), self.mode, None).shape
                except ImageReadError:
                    continue
        raise DataError("no readable image to fix the image size; set data.image_size",
                        file=self.path, field="image_path", reason="no_readable_image")

    def _image_cell(self, raw: str | None) -> tuple[np.ndarray | None, str | None]:
        if raw is None:
            return None, None  # validation counts missing images
        try:
            return load_image(resolve_image(self.root, raw), self.mode, self.size).ravel(), None
        except ImageReadError as exc:
            return None, exc.problem

    def _text_cell(self, text: str | None) -> tuple[str | None, str | None]:
        """Undecodable bytes (read as U+FFFD): kept (and counted by preprocessing), or with
        `encoding_errors=fail` the row is bad."""
        if text is not None and "\ufffd" in text and self.encoding_errors == "fail":
            return None, "undecodable_text"
        return text, None

    def _batch(self, chunk: pd.DataFrame, row0: int) -> pa.RecordBatch:
        n = len(chunk)
        labels = [label_index(v, self._index) for v in chunk["label"]]
        problems = [(p, "label") if p else (None, None) for _, p in labels]
        cols: dict[str, list] = {
            "id": chunk["id"].tolist(),
            "label": [label for label, _ in labels],
            "origin": [f"{self.path}:{row0 + i + 1}" for i in range(n)],
        }
        if "split" in chunk:
            cols["split"] = chunk["split"].tolist()
        if "text" in chunk:
            texts = [self._text_cell(t) for t in chunk["text"]]
            cols["text"] = [t for t, _ in texts]
            problems = [first if first[0] or not p else (p, "text")
                        for (_, p), first in zip(texts, problems, strict=True)]
        if "image_path" in chunk:
            images = [self._image_cell(raw) for raw in chunk["image_path"]]
            cols["image"] = [pixels for pixels, _ in images]
            problems = [first if first[0] or not p else (p, "image_path")
                        for (_, p), first in zip(images, problems, strict=True)]
        cols["problem"] = [p for p, _ in problems]
        cols["problem_field"] = [f for _, f in problems]
        return raw_batch(cols)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Manifest rows in file order, `batch_rows` at a time."""
        row0 = 0
        for chunk in read_manifest(self.path, self.columns, batch_rows):
            yield self._batch(chunk, row0)
            row0 += len(chunk)
