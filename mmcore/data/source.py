"""The contract every data source meets: re-iterable batches of raw rows in one Arrow schema.

A source never decides what is *bad* beyond what only it can see (a file it cannot decode): it
marks such rows with `problem` / `problem_field` and leaves every other check to
`mmcore.data.validation`, so that all sources count bad rows the same way. Whole-file problems
(a truncated IDX file, a corrupt gzip, no rows at all) raise `DataError` at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

# Raw rows, as every source yields them.
#   id       unique sample id (may be null/duplicate: validation counts that)
#   label    class index, null when missing
#   split    "train"/"val"/"test" when the source fixes it (MNIST t10k, IMDB test), else null
#   image    flattened pixels in [0, 1], channel-first (C*H*W), null when the row has no image
#   text     raw text, null when the row has no text
#   origin   where the row came from, for error messages: "path/to/file:row"
#   problem  reason code when the source could not read part of the row, else null
#   problem_field  the field that `problem` concerns ("image", "text", ...)
RAW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("label", pa.int64()),
        ("split", pa.string()),
        ("image", pa.list_(pa.float32())),
        ("text", pa.string()),
        ("origin", pa.string()),
        ("problem", pa.string()),
        ("problem_field", pa.string()),
    ]
)


class DataError(ValueError):
    """Input that cannot be used. Names the file, the row (when there is one) and the field."""

    def __init__(self, message: str, *, file: str | Path | None = None, row: int | None = None,
                 field: str | None = None, reason: str | None = None):
        self.file, self.row, self.field, self.reason = file, row, field, reason
        where = ", ".join(
            part for part in (
                f"file {file}" if file is not None else "",
                f"row {row}" if row is not None else "",
                f"field '{field}'" if field else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)


@dataclass
class SourceInfo:
    """What a source declares about itself before any row is read."""

    name: str
    class_names: list[str]
    image_shape: tuple[int, int, int] | None  # (C, H, W); None for text-only sources
    has_text: bool
    files: list[Path] = field(default_factory=list)  # fingerprinted into the preprocessing key
    extra: dict[str, str] = field(default_factory=dict)  # e.g. provenance of generated texts

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, has in (("image", self.image_shape is not None),
                                      ("text", self.has_text)) if has)


class Source(Protocol):
    info: SourceInfo

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Yield RAW_SCHEMA batches of at most `batch_rows` rows; callable more than once."""
        ...


def raw_batch(columns: dict[str, list | pa.Array]) -> pa.RecordBatch:
    """Build a RAW_SCHEMA batch; missing columns are all-null."""
    n = len(next(iter(columns.values())))
    arrays = [
        pa.array(columns[f.name], type=f.type) if f.name in columns else pa.nulls(n, f.type)
        for f in RAW_SCHEMA
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=RAW_SCHEMA)
