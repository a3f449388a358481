"""IMDB movie reviews in the `aclImdb` layout: `{train,test}/{pos,neg}/<id>_<rating>.txt`.

`cfg.path` is the `aclImdb` folder or its parent. Label 0 = neg, 1 = pos; the split comes from
the folder; id `<split>-<pos|neg>-<file stem>` (e.g. `train-pos-123_9`); origin is the review's
file. Other folders (`unsup/`) and hidden files (`.DS_Store`) are not reviews and are not listed;
every other entry of a class folder becomes a row, bad ones marked with a `problem`:
`bad_filename` (not `<id>_<rating>.txt`), `unreadable_file`, and, with
`encoding_errors=fail`, `undecodable_text`. With `encoding_errors=replace` undecodable bytes
become U+FFFD and the row is kept; `replaced_count` says how many files that happened to.
Texts are cleaned of `<br />` tags (each becomes a newline) and HTML entities (`&amp;` -> `&`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from mmcore.config import DataConfig
from mmcore.data.source import DataError, SourceInfo, raw_batch

SPLITS = ("train", "test")
CLASSES = ("neg", "pos")  # label index = position
FILENAME = re.compile(r"(\d+)_(\d+)\.txt")
BREAK = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)


def clean_review(text: str) -> str:
    """Review text without `<br />` tags and HTML entities."""
    return html.unescape(BREAK.sub("\n", text))


def _aclimdb_root(path: Path) -> Path:
    """The `aclImdb` folder, given it or its parent."""
    return path / "aclImdb" if (path / "aclImdb").is_dir() else path


def _sort_key(path: Path) -> tuple[int, str]:
    match = FILENAME.fullmatch(path.name)
    return (int(match.group(1)) if match else -1, path.name)


def _list_reviews(root: Path) -> list[tuple[str, int, Path]]:
    """(split, label, file) of every candidate review, in a fixed order; DataError if none."""
    if not root.is_dir():
        raise DataError("not a folder", file=root, reason="missing_folder")
    entries = []
    for split in SPLITS:
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            if not folder.is_dir():
                raise DataError(f"missing folder {split}/{name} (expected the aclImdb layout)",
                                file=folder, reason="missing_folder")
            files = sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                           key=_sort_key)
            entries += [(split, label, p) for p in files]
    if not entries:
        raise DataError("no review files under train/ and test/", file=root,
                        reason="empty_dataset")
    return entries


class ImdbSource:
    """Text-only source over an `aclImdb` folder, one row per review file, streamed."""

    def __init__(self, cfg: DataConfig, seed: int):
        if cfg.text != "source":
            raise DataError(f"imdb rows are review texts; data.text={cfg.text} leaves no "
                            "modality", field="data.text")
        self.root = _aclimdb_root(Path(cfg.path))
        self._entries = _list_reviews(self.root)
        self._fail_on_undecodable = cfg.encoding_errors == "fail"
        self.replaced_count = 0  # files with replaced bytes, in the latest (or current) pass
        self.info = SourceInfo(
            name="imdb", class_names=list(CLASSES), image_shape=None, has_text=True,
            files=[self.root / s / c for s in SPLITS for c in CLASSES],
            extra={"root": str(self.root)},
        )

    def ratings(self) -> dict[str, int]:
        """Star rating (1-10) per sample id, from the file names that follow the layout."""
        out = {}
        for split, label, path in self._entries:
            match = FILENAME.fullmatch(path.name)
            if match:
                out[self._id(split, label, path)] = int(match.group(2))
        return out

    @staticmethod
    def _id(split: str, label: int, path: Path) -> str:
        return f"{split}-{CLASSES[label]}-{path.name.removesuffix('.txt')}"

    def _read(self, path: Path) -> dict[str, str | None]:
        """text, problem and problem_field of one review file."""
        if not FILENAME.fullmatch(path.name):
            return {"text": None, "problem": "bad_filename", "problem_field": "id"}
        try:
            raw = path.read_bytes()
        except OSError:
            return {"text": None, "problem": "unreadable_file", "problem_field": "text"}
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if self._fail_on_undecodable:
                return {"text": None, "problem": "undecodable_text", "problem_field": "text"}
            self.replaced_count += 1
            text = raw.decode("utf-8", errors="replace")
        return {"text": clean_review(text), "problem": None, "problem_field": None}

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Reviews in folder order (train/neg, train/pos, test/neg, test/pos), read per batch."""
        self.replaced_count = 0
        for start in range(0, len(self._entries), batch_rows):
            entries = self._entries[start:start + batch_rows]
            read = [self._read(path) for _, _, path in entries]
            yield raw_batch({
                "id": [self._id(split, label, path) for split, label, path in entries],
                "label": [label for _, label, _ in entries],
                "split": [split for split, _, _ in entries],
                "text": [r["text"] for r in read],
                "origin": [str(path) for _, _, path in entries],
                "problem": [r["problem"] for r in read],
                "problem_field": [r["problem_field"] for r in read],
            })
